//! One tunnel with both ends in the test's hands: the client's raw stream and the backend's
//! accepted connection, after the upgrade and the client's go byte, so a test can drive each
//! side byte by byte (flood, stop reading, half-close, reset) on a tunnel it knows is open.

use tokio::{net::TcpStream, sync::mpsc};

use crate::{
    backend::{RawBackend, RawConn},
    client::{self, RawTunnel},
    gateway::GatewayBuilder,
    tunnels,
    wait::within,
    Dataplane, Gateway,
};

/// See the module documentation.
pub struct HeldTunnel {
    pub gateway: Gateway,
    /// The gateway's sockets before the tunnel opened.
    pub baseline_sockets: usize,
    pub client: RawTunnel,
    pub backend: TcpStream,
    /// The backend's listener, which handed its one connection over to the test.
    _server: RawBackend<()>,
}

impl HeldTunnel {
    /// Starts `gateway` (its backend is set here) on `dataplane` and opens one tunnel
    /// through it to `path`; returns once the tunnel has opened in `dataplane`'s mode (which
    /// it asserts) and the backend has read the client's go byte. Nothing else has been sent.
    pub async fn open(gateway: GatewayBuilder, dataplane: Dataplane, path: &str) -> Self {
        let (conns, mut accepted) = mpsc::unbounded_channel();
        let server = RawBackend::start(move |conn: RawConn| {
            let conns = conns.clone();
            async move {
                let _ = conns.send(conn);
            }
        })
        .await;
        let gateway = gateway.backend(server.addr()).dataplane(dataplane).start();
        let baseline_sockets = gateway.socket_fd_count();
        let backend = async {
            let mut conn = accepted.recv().await.expect("the backend accepts");
            conn.accept_upgrade().await;
            conn.read_go().await;
            conn.stream
        };
        let client = async {
            let mut client = client::raw_upgrade(gateway.listen_addr(), path, &[]).await;
            assert!(client.leftover.is_empty(), "bytes came with the 101");
            tunnels::wait_opened(&gateway, dataplane, 1.0).await;
            client.send_go().await;
            client
        };
        let (client, backend) = within(STEP_TIMEOUT, "upgrade and go", async {
            tokio::join!(client, backend)
        })
        .await;
        Self {
            gateway,
            baseline_sockets,
            client,
            backend,
            _server: server,
        }
    }
}

const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
