//! The demo backend, driven over real sockets on 127.0.0.1:0.
use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::tungstenite::Message;

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("local address of the listener");
    tokio::spawn(super::serve(listener));
    addr
}

#[tokio::test]
async fn echo_round_trips_text_and_binary() {
    let addr = start().await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo"))
        .await
        .expect("WebSocket handshake with the demo backend");
    assert_eq!(response.status(), 101);

    ws.send(Message::text("hello, gateway"))
        .await
        .expect("send text");
    let echoed = ws.next().await.expect("an echo").expect("a valid frame");
    assert_eq!(echoed.into_data().as_ref(), b"hello, gateway");

    let payload: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(payload.clone()))
        .await
        .expect("send binary");
    let echoed = ws.next().await.expect("an echo").expect("a valid frame");
    assert!(echoed.is_binary());
    assert_eq!(echoed.into_data().as_ref(), payload.as_slice());

    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn root_serves_the_page_that_opens_the_echo_socket() {
    let addr = start().await;
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the demo backend");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");

    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(
        body.contains(r#"new WebSocket("ws://" + location.host + "/echo")"#),
        "{body}"
    );
}

#[tokio::test]
async fn echo_without_upgrade_is_refused_and_other_paths_are_not_found() {
    let addr = start().await;
    for (request, status) in [
        (
            "GET /echo HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n",
            "400",
        ),
        (
            "GET /nope HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n",
            "404",
        ),
    ] {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the demo backend");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the response");
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{response}"
        );
    }
}
