//! A TCP forwarder from the host into a network namespace: `omlab forward`,
//! which `omlab demo --keep` starts so that a browser on the host reaches
//! the head's web view (`127.0.0.1:7947` → `10.77.0.1:7947` in the demo's
//! namespace). Each connection is served by two threads, one a direction;
//! the connection to the namespace is made from a thread that entered it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;

use crate::error::io_err;
use crate::LabError;

/// Copies `from` into `to` until `from` ends, then ends `to`'s writing side.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Serves one accepted connection: a connection to `to` inside the
/// namespace `ns`, and the bytes both ways.
fn serve(client: TcpStream, ns: &std::fs::File, to: SocketAddr) -> Result<(), LabError> {
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        LabError::Io {
            what: "entering the namespace".into(),
            source: e.into(),
        }
    })?;
    let upstream = TcpStream::connect(to).map_err(io_err(format!("connecting to {to}")))?;
    let (c2, u2) = (
        client.try_clone().map_err(io_err("a socket"))?,
        upstream.try_clone().map_err(io_err("a socket"))?,
    );
    let back = std::thread::spawn(move || pump(u2, c2));
    pump(client, upstream);
    let _ = back.join();
    Ok(())
}

/// Forwards connections to `listen` (on the host) to `to` in the network
/// namespace `ns`, until killed.
pub fn run(listen: SocketAddr, ns: &str, to: SocketAddr) -> Result<(), LabError> {
    let path = format!("/var/run/netns/{ns}");
    let ns_file = std::fs::File::open(&path).map_err(io_err(format!("opening {path}")))?;
    let listener = TcpListener::bind(listen).map_err(io_err(format!("listening on {listen}")))?;
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        let ns = ns_file
            .try_clone()
            .map_err(io_err("duplicating the namespace's handle"))?;
        std::thread::spawn(move || {
            if let Err(e) = serve(client, &ns, to) {
                eprintln!("omlab forward: {e}");
            }
        });
    }
    Ok(())
}
