//! A private network namespace with loopback only, for servers that bind
//! every interface and have no option not to (Buildfarm).
//!
//! The harness makes the namespace itself: a short-lived thread unshares its
//! network namespace, brings `lo` up and hands back a descriptor of it. The
//! servers are started inside it (`setns` between fork and exec), and the
//! harness reaches them through a unix socket in the run directory: pathname
//! unix sockets belong to the filesystem, not to a network namespace, and a
//! relay thread that has itself joined the namespace accepts on that socket
//! and connects to the server's loopback port. So nothing needs `unshare`,
//! `nsenter`, `ip` or `socat`, no process of the cluster can reach any other
//! address, and the namespace goes away with its last process and the last
//! descriptor (no bind mount names it).
//!
//! Making and joining a network namespace needs CAP_SYS_ADMIN.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `struct ifreq` with the flags member (40 bytes on Linux).
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

/// One private network namespace, alive while this value, a process in it
/// or a relay into it is.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

fn last_error(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Brings the calling thread's `lo` up.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain syscalls on a socket this function owns.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(last_error("socket"));
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req = IfreqFlags { name: [0; 16], flags: 0, _pad: [0; 22] };
        req.name[..2].copy_from_slice(b"lo");
        if libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &mut req) < 0 {
            return Err(last_error("reading lo's flags"));
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, &mut req) < 0 {
            return Err(last_error("bringing lo up"));
        }
    }
    Ok(())
}

impl NetNs {
    /// Makes a new network namespace with `lo` up.
    pub fn new() -> Result<NetNs, String> {
        let made = std::thread::Builder::new()
            .name("reapi-netns".into())
            .spawn(|| -> std::io::Result<OwnedFd> {
                // SAFETY: affects only this thread, which ends right after.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(last_error("unshare(CLONE_NEWNET)"));
                }
                loopback_up()?;
                let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
                Ok(OwnedFd::from(ns))
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .map_err(|_| "the network-namespace thread panicked".to_string())?;
        made.map(|fd| NetNs { fd })
            .map_err(|e| format!("cannot make a private network namespace ({e}); it needs CAP_SYS_ADMIN (run as root)"))
    }

    /// Makes `cmd` start inside the namespace.
    pub fn enter(&self, cmd: &mut Command) {
        let fd: RawFd = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the descriptor is open in the
        // forked child until exec (it is close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Serves `socket` (created now) by connecting each client to
    /// `127.0.0.1:port` inside the namespace, until the relay is dropped.
    pub fn relay(&self, socket: &Path, port: u16) -> Result<Relay, String> {
        let fd = self.fd.try_clone().map_err(|e| format!("cannot duplicate the namespace descriptor: {e}"))?;
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("reapi-netns-relay".into())
            .spawn(move || {
                // SAFETY: joins the namespace for this thread only.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let _ = ready_tx.send(Err(last_error("setns").to_string()));
                    return;
                }
                drop(fd);
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let accept = async {
                        loop {
                            let Ok((mut client, _)) = listener.accept().await else { continue };
                            // Spawned on this thread's runtime: the TCP socket
                            // is made inside the namespace.
                            tokio::spawn(async move {
                                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                                    let _ = server.set_nodelay(true);
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                                }
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every open connection.
            })
            .map_err(|e| format!("cannot start the relay thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Relay { stop: Some(stop), thread: Some(thread), socket: socket.to_path_buf() }),
            Ok(Err(e)) => Err(format!("the relay into the network namespace failed: {e}")),
            Err(_) => Err("the relay thread ended during start-up".into()),
        }
    }
}

/// A unix socket relayed to a loopback port inside a namespace.
#[derive(Debug)]
pub struct Relay {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
}

impl Relay {
    /// The unix socket clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside: only `lo` (up, or the relay could not connect); a listener there is reached through the relay
    /// and from nowhere else.
    #[test]
    fn a_server_inside_is_reached_only_through_the_relay() {
        let ns = match NetNs::new() {
            Ok(ns) => ns,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "tail -n +3 /proc/net/dev | cut -d: -f1"]);
        ns.enter(&mut cmd);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.split_whitespace().collect::<Vec<_>>(), ["lo"], "{text}");
        // A listener inside the namespace, on a port the host may use too.
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let fd = ns.fd.try_clone().unwrap();
        std::thread::spawn(move || {
            assert_eq!(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            port_tx.send(l.local_addr().unwrap().port()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            std::io::Write::write_all(&mut s, b"inside").unwrap();
        });
        let port = port_rx.recv().unwrap();
        let relay = ns.relay(&dir.path().join("s.sock"), port).unwrap();
        let mut c = std::os::unix::net::UnixStream::connect(relay.socket()).unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut c, &mut got).unwrap();
        assert_eq!(got, "inside");
        drop(relay);
        assert!(!dir.path().join("s.sock").exists());
    }
}
