//! The `tandem_shared::wire` framing over any byte stream, shared by the transport benchmark's
//! clients and servers so QUIC, TLS and TCP differ only in the transport: a QUIC stream pair as
//! one duplex stream, the request and reply frames, and one framed exchange.

use anyhow::Context as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use tandem_shared::wire::{
    self, DEFAULT_MAX_FRAME_BYTES, FrameDecoder, Message, Timing, encode_to_vec,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// Read buffer per connection or stream (the hub ingress uses the same).
pub const READ_BUF_BYTES: usize = 64 * 1024;

/// A QUIC bidirectional stream as one duplex byte stream.
#[derive(Debug)]
pub struct QuicDuplex {
    /// Sending half.
    pub send: quinn::SendStream,
    /// Receiving half.
    pub recv: quinn::RecvStream,
}

impl AsyncRead for QuicDuplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicDuplex {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// An `InferRequest` frame of exactly `bytes` bytes (image bytes as the payload).
pub fn request_frame(bytes: usize) -> anyhow::Result<Vec<u8>> {
    let msg = |n: usize| Message::InferRequest {
        request_id: 1,
        model: "vision-fashion".into(),
        model_version: None,
        deadline_ms: 0,
        input: wire::Input::ImageBytes(vec![0x5a; n]),
    };
    let overhead = encode_to_vec(&msg(0), DEFAULT_MAX_FRAME_BYTES)?.len();
    let frame = encode_to_vec(
        &msg(bytes.saturating_sub(overhead)),
        DEFAULT_MAX_FRAME_BYTES,
    )?;
    anyhow::ensure!(
        frame.len() == bytes,
        "request frame is {} bytes",
        frame.len()
    );
    Ok(frame)
}

/// The small reply a server sends to a request: ten logits, as the hub answers
/// `vision-fashion`.
pub fn reply_frame(request: &Message) -> anyhow::Result<Vec<u8>> {
    let Message::InferRequest {
        request_id, model, ..
    } = request
    else {
        anyhow::bail!("expected an InferRequest, got {:?}", request.kind());
    };
    let logits = wire::Tensor {
        name: "logits".into(),
        dtype: wire::DType::F32,
        shape: vec![1, 10],
        data: (0..10u8).flat_map(|i| f32::from(i).to_le_bytes()).collect(),
    };
    Ok(encode_to_vec(
        &Message::InferResponse {
            request_id: *request_id,
            model: model.clone(),
            model_version: "1.0.0".into(),
            outputs: vec![logits],
            timing: Timing::default(),
        },
        DEFAULT_MAX_FRAME_BYTES,
    )?)
}

/// Serves one connection or stream: answers every request frame until the peer ends its side,
/// then ends ours (a QUIC stream's FIN, TLS close_notify).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> anyhow::Result<()> {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    let mut buf = vec![0u8; READ_BUF_BYTES];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            decoder.finish()?;
            s.shutdown().await?;
            return Ok(());
        }
        decoder.feed(&buf[..n]);
        while let Some(msg) = decoder.next_message()? {
            s.write_all(&reply_frame(&msg)?).await?;
        }
        s.flush().await?;
    }
}

/// A client's long-lived framed connection or stream.
#[derive(Debug)]
pub struct Framed<S> {
    stream: S,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES),
            buf: vec![0u8; READ_BUF_BYTES],
        }
    }

    /// Sends one frame and waits for one answer.
    pub async fn call(&mut self, frame: &[u8]) -> anyhow::Result<Message> {
        self.stream.write_all(frame).await?;
        self.stream.flush().await?;
        loop {
            if let Some(m) = self.decoder.next_message()? {
                return Ok(m);
            }
            let n = self.stream.read(&mut self.buf).await?;
            anyhow::ensure!(n > 0, "the server closed the stream");
            self.decoder.feed(&self.buf[..n]);
        }
    }
}

/// One request on a new QUIC stream (what the agent's uplink does): open, write, finish, read
/// the answer to the stream's end.
pub async fn quic_stream_call(conn: &quinn::Connection, frame: &[u8]) -> anyhow::Result<Message> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(frame).await?;
    send.finish()?;
    let bytes = recv.read_to_end(DEFAULT_MAX_FRAME_BYTES + 64).await?;
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    d.feed(&bytes);
    d.next_message()?
        .context("the stream ended without an answer")
}
