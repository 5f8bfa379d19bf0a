//! The messages agent and hub exchange, as Rust values: [`Message`], its [`Kind`] numbers and
//! the field types (inputs, tensors, timings, error codes). Byte layouts live in `codec.rs`.

use crate::answer::Prediction;

/// Frame kind byte: which message a frame's payload holds.
///
/// Numbers are grouped by flow: `0x01..=0x0f` offload and liveness, `0x10..=0x1f`
/// store-and-forward delivery, `0x20..=0x2f` model download (`0x24..=0x2f` still free, decoded
/// as [`crate::wire::WireError::UnknownKind`]), `0x30..=0x3f` certificates: enrolment and
/// renewal (`0x33..=0x3f` free). A number, once given, is never reused for another layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`Message::InferRequest`] (agent → hub).
    InferRequest = 0x01,
    /// [`Message::InferResponse`] (hub → agent).
    InferResponse = 0x02,
    /// [`Message::Busy`] (hub → agent).
    Busy = 0x03,
    /// [`Message::Error`] (either way).
    Error = 0x04,
    /// [`Message::Ping`] (either way).
    Ping = 0x05,
    /// [`Message::Pong`] (either way).
    Pong = 0x06,
    /// [`Message::PredictRequest`] (agent → hub).
    PredictRequest = 0x07,
    /// [`Message::PredictResponse`] (hub → agent).
    PredictResponse = 0x08,
    /// [`Message::Deliver`] (agent → hub).
    Deliver = 0x10,
    /// [`Message::Ack`] (hub → agent).
    Ack = 0x11,
    /// [`Message::BundleRequest`] (agent → hub).
    BundleRequest = 0x20,
    /// [`Message::BundleOffer`] (hub → agent).
    BundleOffer = 0x21,
    /// [`Message::ChunkRequest`] (agent → hub).
    ChunkRequest = 0x22,
    /// [`Message::Chunk`] (hub → agent).
    Chunk = 0x23,
    /// [`Message::Enrol`] (agent → hub, enrolment endpoint).
    Enrol = 0x30,
    /// [`Message::Renew`] (agent → hub, mTLS connection).
    Renew = 0x31,
    /// [`Message::Issued`] (hub → agent).
    Issued = 0x32,
}

impl Kind {
    /// The kind for a header byte, or `None` when this build does not know it.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::InferRequest,
            0x02 => Self::InferResponse,
            0x03 => Self::Busy,
            0x04 => Self::Error,
            0x05 => Self::Ping,
            0x06 => Self::Pong,
            0x07 => Self::PredictRequest,
            0x08 => Self::PredictResponse,
            0x10 => Self::Deliver,
            0x11 => Self::Ack,
            0x20 => Self::BundleRequest,
            0x21 => Self::BundleOffer,
            0x22 => Self::ChunkRequest,
            0x23 => Self::Chunk,
            0x30 => Self::Enrol,
            0x31 => Self::Renew,
            0x32 => Self::Issued,
            _ => return None,
        })
    }
}

/// Element type of a [`Tensor`]; the byte is its tag on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// 32-bit IEEE float, little-endian.
    F32 = 1,
    /// 64-bit signed integer, little-endian.
    I64 = 2,
    /// Unsigned byte.
    U8 = 3,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::I64 => 8,
            Self::U8 => 1,
        }
    }
    /// The dtype for a tag byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::F32,
            2 => Self::I64,
            3 => Self::U8,
            _ => return None,
        })
    }
}

/// A dense tensor: `data` is the row-major elements in little-endian, exactly
/// `product(shape) * dtype.size()` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Input or output name, as in the model manifest.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, each `>= 0`; empty for a scalar.
    pub shape: Vec<i64>,
    /// Raw little-endian element bytes.
    pub data: Vec<u8>,
}

/// The input of an offloaded request, in its most compact form (docs/wire.md, "Input forms").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An encoded image (JPEG, PNG) as the device has it; the hub decodes and pre-processes.
    ImageBytes(Vec<u8>),
    /// UTF-8 text; the hub tokenises.
    Text(String),
    /// Pre-processed tensors, named as the model's inputs.
    Tensors(Vec<Tensor>),
}

/// Where the hub spent a request's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// Microseconds from arrival to the start of its batch.
    pub queue_us: u32,
    /// Microseconds the batch took (pre-process, run, post-process).
    pub service_us: u32,
    /// Requests in the batch that served this one.
    pub batch_size: u32,
}

/// Why the hub refused or failed a request; `u16` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or does not fit the model (1).
    BadRequest,
    /// No such model on the hub (2).
    UnknownModel,
    /// The model exists but not the requested version (3).
    UnknownModelVersion,
    /// The deadline passed before the hub could answer (4).
    DeadlineExceeded,
    /// The hub failed; retrying elsewhere or later may work (5).
    Internal,
    /// The frame's kind is unknown to the receiver (6).
    UnsupportedKind,
    /// The peer is shutting down; do not retry on this connection (7).
    ShuttingDown,
    /// The credential does not allow this: a claim token unknown, used, expired or revoked,
    /// or a certificate that may not be renewed (8).
    Forbidden,
    /// A code this build does not know. Decoding never yields a known code's number here.
    Unknown(u16),
}

impl ErrorCode {
    /// The wire number.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::BadRequest => 1,
            Self::UnknownModel => 2,
            Self::UnknownModelVersion => 3,
            Self::DeadlineExceeded => 4,
            Self::Internal => 5,
            Self::UnsupportedKind => 6,
            Self::ShuttingDown => 7,
            Self::Forbidden => 8,
            Self::Unknown(n) => n,
        }
    }
    /// The code for a wire number; unassigned numbers become [`ErrorCode::Unknown`].
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => Self::BadRequest,
            2 => Self::UnknownModel,
            3 => Self::UnknownModelVersion,
            4 => Self::DeadlineExceeded,
            5 => Self::Internal,
            6 => Self::UnsupportedKind,
            7 => Self::ShuttingDown,
            8 => Self::Forbidden,
            other => Self::Unknown(other),
        }
    }
}

/// One protocol message: the payload of one frame.
///
/// There is no device id field: the hub takes the device's identity from its TLS client
/// certificate and keys idempotency by `(certificate identity, request_id)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Run `model` on `input` (agent → hub).
    InferRequest {
        /// Chosen by the agent, unique per device; a retry reuses it. 0 is reserved.
        request_id: u64,
        /// Model name, as in the manifest.
        model: String,
        /// Wanted version; `None` lets the hub pick its current one.
        model_version: Option<String>,
        /// Budget in milliseconds from the hub's receipt; 0 means none.
        deadline_ms: u32,
        /// The input.
        input: Input,
    },
    /// The outputs for a request (hub → agent).
    InferResponse {
        /// The request's id.
        request_id: u64,
        /// Model name.
        model: String,
        /// The version that actually ran on the hub.
        model_version: String,
        /// Output tensors, named as the model's outputs.
        outputs: Vec<Tensor>,
        /// Where the time went.
        timing: Timing,
    },
    /// Run `model` on `input` and answer its typed prediction (agent → hub): what the agent
    /// sends when it offloads.
    PredictRequest {
        /// Chosen by the agent, unique per device; a retry reuses it. 0 is reserved.
        request_id: u64,
        /// Model name, as in the manifest.
        model: String,
        /// Wanted version; `None` lets the hub pick its current one.
        model_version: Option<String>,
        /// Budget in milliseconds from the hub's receipt; 0 means none.
        deadline_ms: u32,
        /// Classes a classification answers, `1..=MAX_PREDICTIONS` (ignored by detection).
        top_k: u16,
        /// True: the answer also carries the model's raw outputs (an OIP v2 caller reads them).
        raw_outputs: bool,
        /// The input.
        input: Input,
    },
    /// The typed prediction for a [`Message::PredictRequest`] (hub → agent), made by the
    /// hub's engine with the same post-processing as the agent's.
    PredictResponse {
        /// The request's id.
        request_id: u64,
        /// Model name.
        model: String,
        /// The version that actually ran on the hub.
        model_version: String,
        /// Where the time went.
        timing: Timing,
        /// The answer: the `top_k` best classes, or the boxes.
        prediction: Prediction,
        /// The model's raw outputs when the request asked for them, else empty.
        outputs: Vec<Tensor>,
    },
    /// The hub cannot take the request now (hub → agent).
    Busy {
        /// The request's id.
        request_id: u64,
        /// Earliest sensible retry, in milliseconds.
        retry_after_ms: u32,
    },
    /// The request failed (hub → agent), or a frame was rejected (either way).
    Error {
        /// The request's id; 0 when the failing frame named none (or could not be decoded).
        request_id: u64,
        /// What went wrong.
        code: ErrorCode,
        /// For people and logs; not for matching.
        message: String,
    },
    /// Liveness probe; the peer answers [`Message::Pong`] with the same nonce.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Answer to [`Message::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// One queued record (agent → hub, store-and-forward, issue 4).
    Deliver {
        /// The agent queue's epoch (changes when the queue is recreated).
        epoch: u64,
        /// Sequence number within the epoch.
        seq: u64,
        /// The record, opaque to the wire layer.
        payload: Vec<u8>,
    },
    /// The hub stored the record `(epoch, seq)`; the agent may delete it (hub → agent).
    Ack {
        /// The record's epoch.
        epoch: u64,
        /// The record's sequence number.
        seq: u64,
    },
    /// Describe a stored model bundle (agent → hub; flow 5, docs/bundle.md).
    BundleRequest {
        /// Model name.
        model: String,
        /// Version.
        version: String,
    },
    /// The files of a bundle (hub → agent), `bundle.json` and `bundle.sig` included.
    BundleOffer {
        /// Model name.
        model: String,
        /// Version.
        version: String,
        /// sha256 of `bundle.json`, lowercase hex: identifies the content.
        digest: String,
        /// Every file: relative path and size in bytes.
        files: Vec<BundleFile>,
    },
    /// Send bytes `offset..offset + len` of one file of a bundle (agent → hub); `len` 0: to
    /// the end. A download cut short resumes with the offset it reached.
    ChunkRequest {
        /// Model name.
        model: String,
        /// Version.
        version: String,
        /// The file, as in the offer.
        path: String,
        /// First byte.
        offset: u64,
        /// Bytes wanted; 0 for all the rest.
        len: u64,
    },
    /// A piece of the file a `ChunkRequest` asked for (hub → agent); the pieces follow each
    /// other on the stream in order.
    Chunk {
        /// Where `data` starts in the file.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A new device asks for its certificate (agent → hub, on the enrolment endpoint: TLS
    /// with server authentication only, docs/enrolment.md).
    Enrol {
        /// The one-time claim token (`tandem-hub claim create`), the bearer credential.
        token: String,
        /// The name the device proposes; the hub prefixes it with the claim's prefix.
        name: String,
        /// A PKCS#10 certificate request (DER) signed by the key the device generated: the
        /// proof that it holds the key. Only its public key is used.
        csr: Vec<u8>,
    },
    /// A device renews its certificate with a new key (agent → hub, on its mTLS connection:
    /// the name is the one of the certificate it connected with).
    Renew {
        /// A PKCS#10 certificate request (DER) signed by the new key.
        csr: Vec<u8>,
    },
    /// The certificate the hub issued (hub → agent), the answer to `Enrol` and `Renew`.
    Issued {
        /// The device's name (its identity: certificate CN and DNS name).
        name: String,
        /// The certificate, DER.
        cert: Vec<u8>,
    },
}

/// One file of a [`Message::BundleOffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

impl Message {
    /// The frame kind that carries this message.
    pub fn kind(&self) -> Kind {
        match self {
            Self::InferRequest { .. } => Kind::InferRequest,
            Self::InferResponse { .. } => Kind::InferResponse,
            Self::PredictRequest { .. } => Kind::PredictRequest,
            Self::PredictResponse { .. } => Kind::PredictResponse,
            Self::Busy { .. } => Kind::Busy,
            Self::Error { .. } => Kind::Error,
            Self::Ping { .. } => Kind::Ping,
            Self::Pong { .. } => Kind::Pong,
            Self::Deliver { .. } => Kind::Deliver,
            Self::Ack { .. } => Kind::Ack,
            Self::BundleRequest { .. } => Kind::BundleRequest,
            Self::BundleOffer { .. } => Kind::BundleOffer,
            Self::ChunkRequest { .. } => Kind::ChunkRequest,
            Self::Chunk { .. } => Kind::Chunk,
            Self::Enrol { .. } => Kind::Enrol,
            Self::Renew { .. } => Kind::Renew,
            Self::Issued { .. } => Kind::Issued,
        }
    }
}
