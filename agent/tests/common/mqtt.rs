//! A real broker for MQTT tests: the hub's PKI with one device, and the hub's supervised
//! mosquitto on a free loopback port.

use std::path::PathBuf;
use std::time::Duration;
use tandem_hub::broker::{Broker, BrokerSpec};
use tandem_hub::pki::Pki;

/// A temporary folder holding a PKI with `device` enrolled, and mosquitto serving it.
pub async fn broker(device: &str) -> (tempfile::TempDir, Pki, Broker) {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&dir.path().join("pki")).expect("pki");
    pki.add_device(device, 30).expect("device");
    let broker = Broker::start(BrokerSpec {
        mosquitto_bin: PathBuf::new(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        pki_dir: pki.dir().to_path_buf(),
        runtime_dir: dir.path().join("run"),
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_secs(2),
        ready_timeout: Duration::from_secs(10),
        crl_check: Duration::from_secs(1),
    })
    .await
    .expect("mosquitto starts (run `make setup`)");
    (dir, pki, broker)
}

/// The `[hub]` certificates of `device` and the `[mqtt]` url for a daemon's config file
/// (ends inside `[mqtt]`, so more of its keys may follow).
pub fn daemon_sections(pki: &Pki, broker: &Broker, device: &str) -> String {
    let (cert, key) = pki.device_files(device);
    format!(
        "[hub]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[mqtt]\nurl = \"{}\"\n",
        pki.dir().join("ca.pem").display(),
        cert.display(),
        key.display(),
        broker.url()
    )
}
