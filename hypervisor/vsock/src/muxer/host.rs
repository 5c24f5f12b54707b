//! Host-side readiness: the listener, pending clients, connection streams, the timer.

use std::io::ErrorKind;
use std::os::unix::io::AsRawFd;
use std::time::Instant;

use tracing::{debug, warn};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};

use super::client::{ClientStep, PendingClient};
use super::{Muxer, Slot, LISTENER_TOKEN, TIMER_TOKEN};
use crate::csm::{ConnKey, Connection};
use crate::Error;

/// Events taken from epoll per call; the rest wait for the next call (level-triggered).
const EVENT_BATCH: usize = 64;
/// Connections accepted per listener event, so a flood cannot starve the guest.
const ACCEPT_BATCH: usize = 16;

impl Muxer {
    /// Handles whatever host fds are ready, without blocking.
    pub(crate) fn handle_host_events(&mut self) -> Result<(), Error> {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(Error::Epoll(e)),
        };
        let now = Instant::now();
        for ev in events.iter().take(n) {
            let set = EventSet::from_bits_truncate(ev.events());
            match ev.data() {
                LISTENER_TOKEN => self.accept_clients(now),
                TIMER_TOKEN => self.on_tick(now),
                token => match self.slots.get(&token).copied() {
                    Some(Slot::Client) => self.on_client_event(token, now),
                    Some(Slot::Conn(key)) => {
                        if let Some(conn) = self.conns.get_mut(&key) {
                            conn.on_host_event(set, now);
                        }
                        self.sync(key);
                    }
                    // Removed earlier in this batch.
                    None => {}
                },
            }
        }
        Ok(())
    }

    fn accept_clients(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("accept on the hybrid vsock socket failed: {e}");
                    return;
                }
            };
            if self.clients.len() >= self.cfg.max_pending_clients {
                debug!("too many host clients in handshake; closing one");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.new_token(Slot::Client);
            if let Err(e) = self.epoll.ctl(
                ControlOperation::Add,
                stream.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            ) {
                debug!("epoll add failed: {e}");
                self.slots.remove(&token);
                continue;
            }
            let deadline = now + self.cfg.handshake_timeout;
            self.clients
                .insert(token, PendingClient::new(stream, deadline));
            self.arm_timer();
        }
    }

    fn on_client_event(&mut self, token: u64, now: Instant) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        match client.on_readable() {
            ClientStep::Pending => {}
            ClientStep::Close(why) => self.drop_client(token, why),
            ClientStep::Connect(port) => self.promote_client(token, port, now),
        }
    }

    /// A client finished `CONNECT <port>`: it becomes a host-initiated connection that owes
    /// the guest a REQUEST. Its fd stays on epoll under the same token.
    fn promote_client(&mut self, token: u64, peer_port: u32, now: Instant) {
        if self.conns.len() >= self.cfg.max_connections {
            return self.drop_client(token, "too many connections");
        }
        let Some(local_port) = self.ports.alloc() else {
            return self.drop_client(token, "no free local port");
        };
        let Some(client) = self.clients.remove(&token) else {
            self.ports.free(local_port);
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port,
        };
        if self.conns.contains_key(&key) {
            // Only a guest that connected from `peer_port` to one of our high ports.
            self.ports.free(local_port);
            self.clients.insert(token, client);
            return self.drop_client(token, "port collision");
        }
        let mut conn =
            Connection::host_initiated(client.stream, key, &self.cfg, self.metrics.clone(), now);
        conn.registered = Some(EventSet::IN);
        debug!(local_port, peer_port, "host connect request");
        self.slots.insert(token, Slot::Conn(key));
        self.conn_tokens.insert(key, token);
        self.host_initiated.insert(key);
        self.conns.insert(key, conn);
        self.sync(key);
    }
}
