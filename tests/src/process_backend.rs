//! A backend in a separate OS process, so a test can kill it (`SIGKILL`) mid-stream and
//! the kernel closes its sockets the way it does for a crashed server.
//!
//! It is a small `python3` program: it listens on `127.0.0.1:0`, prints its port, accepts
//! one connection, answers the upgrade with a correct 101, then writes a known endless
//! stream ([`expected_stream_summary`]) and never reads again. Block `i` of the stream is
//! `SHA-256(seed || i as u64 little-endian)`, so a client can check by length and SHA-256
//! that what it received is exactly a prefix of what the backend sent.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use sha2::{Digest as _, Sha256};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

use crate::{
    data::{Hasher, Summary},
    wait::within,
};

/// How long python3 may take to print its port, and to exit once killed.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// Length of one block of the stream (one SHA-256 digest).
const BLOCK_BYTES: usize = 32;

/// The backend program. `sys.argv[1]` is the seed in hex.
const STREAMING_BACKEND_PY: &str = r#"
import base64, hashlib, socket, sys
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
seed = bytes.fromhex(sys.argv[1])
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
head = b""
while b"\r\n\r\n" not in head:
    chunk = conn.recv(4096)
    if not chunk:
        sys.exit("EOF before the request head ended")
    head += chunk
key = None
for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
    name, _, value = line.partition(b":")
    if name.strip().lower() == b"sec-websocket-key":
        key = value.strip()
if key is None:
    sys.exit("no Sec-WebSocket-Key")
accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
block = 0
while True:
    conn.sendall(b"".join(hashlib.sha256(seed + (block + i).to_bytes(8, "little")).digest()
                          for i in range(2048)))
    block += 2048
"#;

/// The python3 streaming backend; killed when dropped.
pub struct StreamingBackend {
    child: Child,
    addr: SocketAddr,
}

impl StreamingBackend {
    /// Starts the backend with `seed` and waits for it to print its port.
    pub async fn start(seed: &[u8]) -> Self {
        let hex: String = seed.iter().map(|byte| format!("{byte:02x}")).collect();
        let mut child = Command::new("python3")
            .args(["-c", STREAMING_BACKEND_PY, &hex])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3 (the killable backend)");
        let stdout = child.stdout.take().expect("python3 stdout is piped");
        let mut line = String::new();
        within(
            PROCESS_TIMEOUT,
            "the python3 backend prints its port",
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("read the python3 backend's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("python3 backend printed {line:?}, not a port"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the backend with `SIGKILL` and waits for it to exit; panics if it had already
    /// exited, since then it was not killed mid-stream.
    pub async fn kill(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll the python3 backend") {
            panic!("the python3 backend exited before it was killed ({status})");
        }
        self.child
            .start_kill()
            .expect("SIGKILL the python3 backend");
        within(
            PROCESS_TIMEOUT,
            "the killed python3 backend exits",
            self.child.wait(),
        )
        .await
        .expect("wait for the killed python3 backend");
    }
}

/// Length and SHA-256 of the first `len` bytes of the stream the backend writes for `seed`.
pub fn expected_stream_summary(seed: &[u8], len: u64) -> Summary {
    let mut hasher = Hasher::default();
    let mut left = len;
    let mut block: u64 = 0;
    while left > 0 {
        let digest = Sha256::new()
            .chain_update(seed)
            .chain_update(block.to_le_bytes())
            .finalize();
        let take = usize::try_from(left).map_or(BLOCK_BYTES, |left| left.min(BLOCK_BYTES));
        hasher.update(&digest[..take]);
        left -= take as u64;
        block += 1;
    }
    hasher.finish()
}
