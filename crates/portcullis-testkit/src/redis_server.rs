//! A real `redis-server` (Debian's package; scripts/test installs it) for the
//! shared-state tests: on a free loopback port, no persistence, stopped on drop.
//! It can be killed, restarted on the same port, or frozen (SIGSTOP) to play a
//! hung Redis.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    /// The port it listens on (TLS or plain, as the arguments said).
    pub port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free port (`--port`), with `extra` arguments in which
    /// `{port}` stands for that port (`--port 0 --tls-port {port}` serves TLS
    /// there). Returns once it accepts connections.
    pub fn start(extra: &[&str]) -> io::Result<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let args: Vec<String> = extra
            .iter()
            .map(|s| s.replace("{port}", &port.to_string()))
            .collect();
        let mut server = RedisServer {
            child: spawn(port, &args)?,
            port,
            args,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// `redis://USERINFO127.0.0.1:PORT/DB` (`userinfo` like `user:pass@`, or "").
    pub fn url(&self, userinfo: &str, db: u32) -> String {
        format!("redis://{userinfo}127.0.0.1:{}/{db}", self.port)
    }

    /// Kills it (SIGKILL): connections drop, new ones are refused.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and starts it again, empty, on the same port and arguments.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.args)?;
        self.wait_ready()
    }

    /// Sends a signal by name (`-STOP` freezes it, `-CONT` resumes it).
    pub fn signal(&self, sig: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill {sig} failed")))
        }
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("redis-server did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(port: u16, extra: &[String]) -> io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run redis-server (scripts/test installs it): {e}"),
            )
        })
}
