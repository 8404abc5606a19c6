//! A `redis-server` of our own for the chaos run and the tests: loopback
//! only, a free port, a fresh directory, every write synced to an
//! append-only file so that a restart keeps what Redis acknowledged. The
//! process is killed when the value is dropped.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const BINARY: &str = "redis-server";
const HOW_TO_INSTALL: &str = "redis-server is not on PATH; install it, for example with \
     `apt-get update && apt-get install -y redis-server` on Debian or Ubuntu";
const READY_WITHIN: Duration = Duration::from_secs(15);

/// A running, or stopped, `redis-server` on 127.0.0.1.
#[derive(Debug)]
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    ///
    /// # Errors
    ///
    /// Fails with a message saying how to install Redis when the binary is
    /// missing, or when the server does not come up.
    pub(crate) fn start() -> io::Result<Self> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kwickphone-redis-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let mut last = None;
        // Another process may take the free port before Redis binds it.
        for _ in 0..3 {
            let mut server = Self {
                port: free_port()?,
                dir: dir.clone(),
                child: None,
            };
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(err),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// Returns the address to give `RedisStore`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once, as a crash would.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same data.
    ///
    /// # Errors
    ///
    /// Fails when the binary is missing or the server does not come up.
    pub(crate) fn start_again(&mut self) -> io::Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))?;
        let child = Command::new(BINARY)
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|err| match err.kind() {
                io::ErrorKind::NotFound => io::Error::new(err.kind(), HOW_TO_INSTALL),
                _ => err,
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "redis-server exited with {status}; see {}",
                    self.dir.join("redis.log").display()
                )));
            }
            if ping(self.port) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(io::Error::other("redis-server did not answer PING in time"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Answers whether Redis is up and done loading its data.
fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0; 7];
    stream.read_exact(&mut reply).is_ok() && reply == *b"+PONG\r\n"
}
