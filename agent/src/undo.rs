//! Undo steps for multi-step creation: whatever was done is undone, in reverse order,
//! unless the creation completed — so a failed request leaves nothing half-created.

type Step = Box<dyn FnOnce() + Send>;

/// A stack of undo steps, run on drop unless [`Undo::disarm`]ed.
#[derive(Default)]
pub struct Undo {
    steps: Vec<(&'static str, Step)>,
}

impl Undo {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, what: &'static str, step: impl FnOnce() + Send + 'static) {
        self.steps.push((what, Box::new(step)));
    }

    /// Creation succeeded: keep everything.
    pub fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            tracing::debug!(what, "undoing");
            step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn runs_in_reverse_unless_disarmed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut u = Undo::new();
            for i in 0..3 {
                let log = log.clone();
                u.push("step", move || log.lock().unwrap().push(i));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        let mut u = Undo::new();
        let l = log.clone();
        u.push("step", move || l.lock().unwrap().push(9));
        u.disarm();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
