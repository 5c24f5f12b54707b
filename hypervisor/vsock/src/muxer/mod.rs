//! The muxer: every connection of one device, the hybrid-vsock listening socket, the
//! queues of packets for the guest, and one epoll set for all of their host fds.
//!
//! Host side (`host.rs`): epoll readiness of the listener, of clients still sending their
//! `CONNECT` line (`client.rs`, `handshake.rs`), of connection streams, and of a timer
//! for the connect/handshake/shutdown timeouts. Guest side (`guest.rs`): packets from the
//! TX queue, and the next packet for the RX queue.

mod client;
mod guest;
mod handshake;
mod host;
mod ports;
mod queues;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use self::client::PendingClient;
use self::ports::LocalPorts;
use self::queues::{ControlQueue, RxSchedule};
use crate::config::VsockConfig;
use crate::csm::{ConnKey, Connection};
use crate::metrics::Metrics;
use crate::Error;

const LISTENER_TOKEN: u64 = 0;
const TIMER_TOKEN: u64 = 1;

/// Who an epoll token belongs to.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Client,
    Conn(ConnKey),
}

pub(crate) struct Muxer {
    cfg: VsockConfig,
    metrics: Arc<Metrics>,
    epoll: Epoll,
    listener: UnixListener,
    timer: TimerFd,
    timer_armed: bool,
    tick: Duration,
    conns: HashMap<ConnKey, Connection>,
    /// Epoll token of each connection's stream.
    conn_tokens: HashMap<ConnKey, u64>,
    /// Host-initiated connections own their local port.
    host_initiated: HashSet<ConnKey>,
    clients: HashMap<u64, PendingClient>,
    slots: HashMap<u64, Slot>,
    next_token: u64,
    control: ControlQueue,
    rx_sched: RxSchedule,
    ports: LocalPorts,
}

impl Muxer {
    /// Binds `cfg.uds_path` (which must not exist) and sets up the epoll set.
    pub(crate) fn new(cfg: VsockConfig, metrics: Arc<Metrics>) -> Result<Self, Error> {
        cfg.validate()?;
        let path = &cfg.uds_path;
        if fs::symlink_metadata(path).is_ok() {
            return Err(Error::SocketExists(path.clone()));
        }
        let listener = UnixListener::bind(path).map_err(|source| Error::Bind {
            path: path.clone(),
            source,
        })?;
        // From here on, Drop removes the socket file.
        let cleanup = RemoveOnError(path);
        listener
            .set_nonblocking(true)
            .map_err(|source| Error::Bind {
                path: path.clone(),
                source,
            })?;
        let epoll = Epoll::new().map_err(Error::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
            )
            .map_err(Error::Epoll)?;
        let timer = TimerFd::new().map_err(|e| Error::Timer(e.into()))?;
        epoll
            .ctl(
                ControlOperation::Add,
                timer.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TIMER_TOKEN),
            )
            .map_err(Error::Epoll)?;
        let shortest = cfg
            .connect_timeout
            .min(cfg.shutdown_timeout)
            .min(cfg.handshake_timeout);
        let tick = (shortest / 4).clamp(Duration::from_millis(1), Duration::from_millis(250));
        std::mem::forget(cleanup);
        Ok(Muxer {
            control: ControlQueue::new(cfg.control_queue_len),
            cfg,
            metrics,
            epoll,
            listener,
            timer,
            timer_armed: false,
            tick,
            conns: HashMap::new(),
            conn_tokens: HashMap::new(),
            host_initiated: HashSet::new(),
            clients: HashMap::new(),
            slots: HashMap::new(),
            next_token: TIMER_TOKEN + 1,
            rx_sched: RxSchedule::default(),
            ports: LocalPorts::default(),
        })
    }

    /// The epoll fd: readable when a host fd needs attention.
    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn pending_client_count(&self) -> usize {
        self.clients.len()
    }

    pub(crate) fn control_queue_len(&self) -> usize {
        self.control.len()
    }

    /// Whether there may be a packet for the guest.
    pub(crate) fn has_rx_work(&self) -> bool {
        !self.control.is_empty() || !self.rx_sched.is_empty()
    }

    /// Whether a TX packet can be taken now: each may need one connection-less reply.
    pub(crate) fn can_take_tx(&self) -> bool {
        !self.control.is_full()
    }

    /// Forgets every connection (the guest reset its device): host streams are closed,
    /// nothing is sent to the guest. Host clients still in their handshake stay.
    pub(crate) fn reset(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove(key);
        }
        while self.control.pop().is_some() {}
        self.rx_sched = RxSchedule::default();
    }

    fn new_token(&mut self, slot: Slot) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.slots.insert(token, slot);
        token
    }

    /// Brings a connection's bookkeeping in line with its state: removes it when dead,
    /// updates its epoll interest, schedules it for RX, arms the timer for its deadline.
    fn sync(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.is_dead() {
            self.remove(key);
            return;
        }
        let want = conn.interest();
        if want != conn.registered {
            let token = self.conn_tokens.get(&key).copied().unwrap_or(u64::MAX);
            let fd = conn.stream_fd();
            let res = match (conn.registered, want) {
                (None, Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, token))
                }
                (Some(_), Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Modify, fd, EpollEvent::new(ev, token))
                }
                (Some(_), None) => {
                    self.epoll
                        .ctl(ControlOperation::Delete, fd, EpollEvent::default())
                }
                (None, None) => Ok(()),
            };
            match res {
                Ok(()) => conn.registered = want,
                Err(e) => {
                    debug!(?key, "epoll update failed: {e}");
                    conn.abort();
                }
            }
        }
        if conn.has_rx_work() {
            self.rx_sched.push(key);
        }
        if conn.deadline().is_some() {
            self.arm_timer();
        }
    }

    fn remove(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        if conn.registered.is_some() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream_fd(),
                EpollEvent::default(),
            );
        }
        if let Some(token) = self.conn_tokens.remove(&key) {
            self.slots.remove(&token);
        }
        if self.host_initiated.remove(&key) {
            self.ports.free(key.local_port);
        }
        Metrics::inc(&self.metrics.conns_closed);
        debug!(
            local_port = key.local_port,
            peer_port = key.peer_port,
            "connection closed"
        );
        // Dropping `conn` closes the host stream.
    }

    fn arm_timer(&mut self) {
        if !self.timer_armed {
            match self.timer.reset(self.tick, Some(self.tick)) {
                Ok(()) => self.timer_armed = true,
                Err(e) => debug!("arming the timer failed: {e}"),
            }
        }
    }

    /// Fires due deadlines; disarms the timer when none is left.
    fn on_tick(&mut self, now: Instant) {
        let _ = self.timer.wait();
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.on_tick(now);
            }
            self.sync(key);
        }
        let late: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            self.drop_client(token, "CONNECT line timed out");
        }
        let any_left =
            !self.clients.is_empty() || self.conns.values().any(|c| c.deadline().is_some());
        if !any_left && self.timer.clear().is_ok() {
            self.timer_armed = false;
        }
    }

    fn drop_client(&mut self, token: u64, why: &str) {
        if let Some(client) = self.clients.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                client.stream.as_raw_fd(),
                EpollEvent::default(),
            );
            debug!("closing host client: {why}");
        }
        self.slots.remove(&token);
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.cfg.uds_path);
    }
}

/// Removes a just-bound socket file if construction fails half way.
struct RemoveOnError<'a>(&'a std::path::Path);

impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}
