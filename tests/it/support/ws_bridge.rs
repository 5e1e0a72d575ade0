//! A WebSocket front for a TCP MQTT broker, as Mosquitto's `protocol websockets` listener
//! or EMQX's ws port would be: MQTT packets ride in binary frames under the `mqtt`
//! subprotocol. The machine's Mosquitto is built without websockets, so this is how the
//! server's and cabinets' ws:// and wss:// transports meet a real broker in the tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

pub struct WsBridge {
    pub addr: SocketAddr,
    /// WebSocket sessions that completed their handshake with the `mqtt` subprotocol.
    pub sessions: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS acceptor for wss:// from a PEM certificate and key (`coinpulse tls self-signed`).
pub fn tls_acceptor(cert: &Path, key: &Path) -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Listens on a free loopback port and relays each WebSocket session to `upstream`
/// (host:port of a TCP MQTT listener); with `tls`, it is a wss:// listener.
pub async fn ws_bridge(upstream: &str, tls: Option<TlsAcceptor>) -> WsBridge {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sessions = Arc::new(AtomicUsize::new(0));
    let (upstream, counted) = (upstream.to_owned(), sessions.clone());
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            let (upstream, counted, tls) = (upstream.clone(), counted.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(tls) => {
                        if let Ok(sock) = tls.accept(sock).await {
                            relay(sock, &upstream, &counted).await
                        }
                    }
                    None => relay(sock, &upstream, &counted).await,
                }
            });
        }
    });
    WsBridge {
        addr,
        sessions,
        task,
    }
}

async fn relay<S>(sock: S, upstream: &str, sessions: &AtomicUsize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A client that asks for the `mqtt` subprotocol must get it back, or it hangs up.
    // (The callback's error type is tungstenite's, however large clippy finds it.)
    #[allow(clippy::result_large_err)]
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(sock, |req: &Request, mut res: Response| {
        let asked = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if asked.split(',').any(|p| p.trim() == "mqtt") {
            res.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        }
        Ok(res)
    })
    .await
    else {
        return;
    };
    let Ok(tcp) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    sessions.fetch_add(1, Ordering::SeqCst);
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let up = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            match msg {
                Message::Binary(bytes) if tcp_tx.write_all(&bytes).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = tcp_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let frame = Message::Binary(buf[..n].to_vec().into());
            if ws_tx.send(frame).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.close().await;
    };
    // Either side hanging up ends the session, as a broker's own listener would.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
