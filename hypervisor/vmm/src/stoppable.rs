//! A thread its owner ends: the device threads ([`crate::devices::thread`]) and the API
//! thread ([`crate::api::ApiServer`]).

use std::thread::JoinHandle;

/// A running thread that [`StoppableThread::stop`], or dropping it, tells to end and
/// waits for.
pub(crate) struct StoppableThread {
    thread: Option<JoinHandle<()>>,
    /// Tells the thread to end.
    signal: Option<Box<dyn FnOnce() + Send>>,
    /// What a panic of the thread is logged as.
    panicked: &'static str,
}

impl StoppableThread {
    /// Owns `thread`, which `signal` tells to end; a panic of it is logged as `panicked`.
    pub(crate) fn new(
        thread: JoinHandle<()>,
        panicked: &'static str,
        signal: impl FnOnce() + Send + 'static,
    ) -> StoppableThread {
        StoppableThread {
            thread: Some(thread),
            signal: Some(Box::new(signal)),
            panicked,
        }
    }

    /// Tells the thread to end and waits for it.
    pub(crate) fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Some(signal) = self.signal.take() {
            signal();
        }
        let name = thread.thread().name().unwrap_or_default().to_owned();
        if thread.join().is_err() {
            tracing::warn!(thread = %name, "{}", self.panicked);
        }
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        self.end();
    }
}
