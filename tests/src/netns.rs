//! Several hosts on one machine: a [`Rig`] of Linux network namespaces, one per host, joined
//! by a bridge that lives in a namespace of its own (one veth pair per host), with private
//! addresses (`10.213.0.0/24`) that exist only inside those namespaces and a hosts file per
//! namespace (`/etc/netns/NS/hosts`) that names every host `NAME.tandem.test`.
//!
//! - Processes run in a host with [`Rig::command`] (`ip netns exec NS ...`, which also
//!   bind-mounts the namespace's hosts file over `/etc/hosts`, so names resolve).
//! - The test itself reaches a host through [`Rig::on`]: the future runs on a thread that moved
//!   into the host's namespace, so the sockets it opens are that host's.
//! - [`Rig::cut`] and [`Rig::restore`] take a host's cable out of the bridge and put it back.
//! - Clean-up, however the test ends: dropping the rig kills every process left in its
//!   namespaces, deletes them (links go with them) and their hosts files; a new rig first
//!   sweeps the namespaces of test processes that are gone. Names carry the test process's id
//!   and a counter, so rigs of parallel tests never collide.
//!
//! Needs root and iproute2 (`make setup` installs it): without them [`Rig::new`] fails the test
//! with a message saying so (never a silent pass).

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

/// Prefix of every namespace a rig makes (`tdmt-PID-N-HOST`).
pub const PREFIX: &str = "tdmt-";
/// The DNS domain of the hosts: host `hub` is `hub.tandem.test` in every hosts file.
pub const DOMAIN: &str = "tandem.test";
/// The first three octets of the hosts' addresses; host `i` (from 0) gets `.{i + 1}`.
const SUBNET: [u8; 3] = [10, 213, 0];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One host of a rig.
#[derive(Debug)]
pub struct Host {
    /// The name it was given (`hub`, `a1`).
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    /// The bridge's end of its cable (in the bridge's namespace).
    port: String,
    /// A thread in its namespace running a Tokio runtime, for [`Rig::on`].
    runtime: Option<NsRuntime>,
}

#[derive(Debug)]
struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Network namespaces joined by a bridge; removed on drop.
#[derive(Debug)]
pub struct Rig {
    bridge: String,
    hosts: Vec<Host>,
}

/// Runs `ip ARGS`; the error names the command and what it wrote.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Fails the test: the rig cannot be made here.
fn cannot(why: &str) -> ! {
    panic!(
        "multi-host tests need Linux network namespaces: run them as root with iproute2 \
         installed (`make setup` installs it; CI runs as root). {why}"
    )
}

fn hosts_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// Kills every process in namespace `ns`, deletes it and its hosts file.
fn remove_ns(ns: &str) {
    for _ in 0..50 {
        let pids: Vec<i32> = ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = ip(&["netns", "del", ns]);
    let _ = std::fs::remove_dir_all(hosts_dir(ns));
}

/// The test process that made namespace `ns` (`tdmt-PID-...`), if the name is one of ours.
fn owner(ns: &str) -> Option<u32> {
    ns.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes the namespaces (and hosts files) of rigs whose test process is gone.
fn sweep() {
    let listed = ip(&["netns", "list"]).unwrap_or_default();
    let mut names: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    if let Ok(dir) = std::fs::read_dir("/etc/netns") {
        names.extend(dir.filter_map(|e| e.ok()?.file_name().into_string().ok()));
    }
    for ns in names {
        if let Some(pid) = owner(&ns)
            && !PathBuf::from(format!("/proc/{pid}")).exists()
        {
            remove_ns(&ns);
        }
    }
}

impl Rig {
    /// Makes a namespace per host in `hosts` (addresses `10.213.0.1`, `.2`, ... in order) and
    /// the bridge joining them; every host's hosts file names all of them `NAME.tandem.test`.
    /// Fails the test with a clear message where namespaces cannot be made.
    pub fn new(hosts: &[&str]) -> Rig {
        if !rustix::process::geteuid().is_root() {
            cannot("This process is not root.");
        }
        if let Err(e) = ip(&["-V"]) {
            cannot(&format!("iproute2 is missing: {e}"));
        }
        assert!((1..=200).contains(&hosts.len()), "a rig has 1 to 200 hosts");
        sweep();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut rig = Rig {
            bridge: format!("{id}-br"),
            hosts: Vec::new(),
        };
        if let Err(e) = rig.build(&id, hosts) {
            cannot(&format!("Making the rig failed: {e}"));
        }
        rig
    }

    fn build(&mut self, id: &str, names: &[&str]) -> Result<(), String> {
        let br = self.bridge.clone();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut hosts_file = String::from("127.0.0.1 localhost\n");
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{id}-{name}");
            let octet = u8::try_from(i + 1).map_err(|_| "too many hosts".to_string())?;
            let host_ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet);
            let port = format!("p{i}");
            ip(&["netns", "add", &ns])?;
            self.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                ip: host_ip,
                port: port.clone(),
                runtime: None,
            });
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            hosts_file.push_str(&format!("{host_ip} {name}.{DOMAIN}\n"));
        }
        for h in &mut self.hosts {
            let dir = hosts_dir(&h.ns);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::write(dir.join("hosts"), &hosts_file)
                .map_err(|e| format!("{}/hosts: {e}", dir.display()))?;
            h.runtime = Some(NsRuntime::start(&h.ns)?);
        }
        Ok(())
    }

    /// The host named `name` (panics if the rig has none).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("the rig has no host `{name}`"))
    }

    /// The DNS name of host `name` in every host's hosts file (`NAME.tandem.test`).
    pub fn dns_name(&self, name: &str) -> String {
        format!("{}.{DOMAIN}", self.host(name).name)
    }

    /// `program` to run in host `name` (through `ip netns exec`, which puts the host's hosts
    /// file over `/etc/hosts` for it); add arguments and spawn as usual.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(name).ns]).arg(program);
        c
    }

    /// Puts `ip NAME.tandem.test` first in host `host`'s hosts file: that host resolves `name`
    /// to `ip` and then to its own address (an address that answers nothing tries a client's
    /// fallback to the next one). Processes started afterwards see it.
    pub fn prepend_address(&self, host: &str, ip: Ipv4Addr, name: &str) {
        let file = hosts_dir(&self.host(host).ns).join("hosts");
        let old =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        std::fs::write(&file, format!("{ip} {name}.{DOMAIN}\n{old}"))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }

    /// Takes host `name`'s cable out: its link on the bridge goes down (the host's own
    /// interface stays configured; packets to and from it are lost).
    pub fn cut(&self, name: &str) {
        let h = self.host(name);
        ip(&["-n", &self.bridge, "link", "set", &h.port, "down"])
            .unwrap_or_else(|e| panic!("cut {name}: {e}"));
    }

    /// Puts host `name`'s cable back.
    pub fn restore(&self, name: &str) {
        let h = self.host(name);
        ip(&["-n", &self.bridge, "link", "set", &h.port, "up"])
            .unwrap_or_else(|e| panic!("restore {name}: {e}"));
    }

    /// Runs `fut` inside host `name`: on a thread in its network namespace, so the sockets it
    /// opens (an HTTP client's, a QUIC endpoint's) belong to that host. A panic in `fut` fails
    /// the caller.
    pub async fn on<T, F>(&self, name: &str, fut: F) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        match self.spawn_on(name, fut).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Rig {
    /// Starts `fut` inside host `name` (as [`Rig::on`]) without waiting for it.
    pub fn spawn_on<T, F>(&self, name: &str, fut: F) -> tokio::task::JoinHandle<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let rt = self
            .host(name)
            .runtime
            .as_ref()
            .expect("started with the rig");
        rt.handle.spawn(fut)
    }

    /// An HTTP request from inside host `name`: `(status, body)`, or why it failed (refused,
    /// timed out after 10 s).
    pub async fn http(
        &self,
        name: &str,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), String> {
        self.http_as(name, method, url, body, Vec::new()).await
    }

    /// [`Rig::http`] with these headers (the hub's operator routes: `Authorization: Bearer
    /// TOKEN`, `Content-Type: application/json`).
    pub async fn http_as(
        &self,
        name: &str,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(u16, Vec<u8>), String> {
        let (method, url) = (method.to_string(), url.to_string());
        self.on(name, async move {
            let c = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?;
            let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
            let mut req = c.request(m, &url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(b) = body {
                req = req.body(b);
            }
            let r = req
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = r.status().as_u16();
            let bytes = r
                .bytes()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            Ok((status, bytes.to_vec()))
        })
        .await
    }
}

impl NsRuntime {
    /// A thread that moves into namespace `ns` and runs a current-thread runtime until stopped.
    fn start(ns: &str) -> Result<Self, String> {
        let path = PathBuf::from("/run/netns").join(ns);
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn(move || {
                let entered = std::fs::File::open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|f| {
                        rustix::thread::move_into_link_name_space(
                            f.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        )
                        .map_err(|e| format!("setns {}: {e}", path.display()))
                    });
                let rt = entered.and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("runtime: {e}"))
                });
                match rt {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| format!("thread: {e}"))?;
        let handle = rx
            .recv()
            .map_err(|_| "the namespace thread died".to_string())??;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.runtime = None;
            remove_ns(&h.ns);
        }
        remove_ns(&self.bridge);
    }
}
