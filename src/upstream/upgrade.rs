//! The client's side of a protocol switch (WebSocket, any HTTP/1.1 `Upgrade`): how the
//! tunnel gets the client's connection once the `101` has been written.
//!
//! Two ways, after how the connection is served (see `crate::server`):
//! - through hyper-util's version detection (HTTP/2-capable connections): hyper's own
//!   [`OnUpgrade`];
//! - by hyper's HTTP/1 connection directly: the connection's task runs hyper without
//!   letting it close the socket (so that an idle connection can be parked without
//!   hyper's buffers), so it is that task which takes the connection back from hyper
//!   after the `101` and hands it over, through this connection's [`Handover`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::body::BoxError;

/// A byte stream a tunnel can splice.
pub trait TunnelIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelIo for T {}

/// The client's connection after the switch (with whatever it sent after the request,
/// first).
pub type UpgradedIo = Box<dyn TunnelIo>;

/// Where the client's connection will come from once the `101` is written; a request
/// extension of upgrade requests.
#[derive(Clone)]
pub enum ClientUpgrade {
    Hyper(OnUpgrade),
    HandedOver(Arc<Mutex<Option<oneshot::Receiver<UpgradedIo>>>>),
}

impl ClientUpgrade {
    /// The client's connection, once the switch has happened.
    pub async fn into_io(self) -> Result<UpgradedIo, BoxError> {
        match self {
            ClientUpgrade::Hyper(on) => Ok(Box::new(TokioIo::new(on.await?))),
            ClientUpgrade::HandedOver(rx) => {
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner()).take();
                match rx {
                    Some(rx) => Ok(rx.await?),
                    None => Err("the client's upgrade was taken already".into()),
                }
            }
        }
    }
}

/// One connection's handover of upgraded connections (see the module docs).
#[derive(Default)]
pub struct Handover {
    /// The connection's task hands upgrades over (it serves hyper's HTTP/1 connection
    /// directly); otherwise hyper does.
    enabled: AtomicBool,
    waiting: Mutex<Option<oneshot::Sender<UpgradedIo>>>,
}

impl Handover {
    /// From now on this connection's task hands upgrades over.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// The client's side of an upgrade request's switch. `hyper` is the request's
    /// [`OnUpgrade`], used when this connection does not hand over.
    pub fn client_upgrade(&self, hyper: Option<OnUpgrade>) -> Option<ClientUpgrade> {
        if !self.enabled.load(Ordering::Relaxed) {
            return hyper.map(ClientUpgrade::Hyper);
        }
        let (tx, rx) = oneshot::channel();
        // One request at a time on an HTTP/1 connection: a waiting sender left by an
        // earlier request that did not switch is replaced.
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        Some(ClientUpgrade::HandedOver(Arc::new(Mutex::new(Some(rx)))))
    }

    /// The tunnel waiting for this connection, if an upgrade request is still waiting for
    /// it (the connection's task calls this when hyper has let the connection go).
    pub fn take_waiting(&self) -> Option<oneshot::Sender<UpgradedIo>> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .filter(|tx| !tx.is_closed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_handed_over_connection_reaches_the_tunnel() {
        let handover = Handover::default();
        assert!(
            handover.client_upgrade(None).is_none(),
            "not enabled, no hyper upgrade"
        );
        handover.enable();
        let upgrade = handover.client_upgrade(None).expect("enabled");
        let tx = handover.take_waiting().expect("a tunnel waits");
        assert!(handover.take_waiting().is_none(), "taken once");
        let (ours, mut theirs) = tokio::io::duplex(64);
        tx.send(Box::new(ours))
            .ok()
            .expect("the tunnel still waits");
        let mut io = upgrade.into_io().await.unwrap();
        io.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        theirs.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn a_request_that_did_not_switch_leaves_nothing_waiting() {
        let handover = Handover::default();
        handover.enable();
        let upgrade = handover.client_upgrade(None).expect("enabled");
        drop(upgrade);
        assert!(handover.take_waiting().is_none());
    }
}
