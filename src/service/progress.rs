//! A spawn's progress log: every event is kept, so a late subscriber gets the history first and
//! then the live events, and every stream ends after the terminal (ready/failed) event.

use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::watch;

use fleetspawn_core::lifecycle::ProgressEvent;

/// The shared log of one spawn. Cheap to clone.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    events: Mutex<Vec<ProgressEvent>>,
    /// Number of events so far; wakes subscribers.
    count: watch::Sender<usize>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { inner: Arc::new(Inner { events: Mutex::new(Vec::new()), count: watch::channel(0).0 }) }
    }
}

impl Progress {
    /// Appends an event, unless the log already ended. Progress never goes backwards.
    pub fn push(&self, mut event: ProgressEvent) {
        let mut events = self.inner.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.last().is_some_and(ProgressEvent::is_terminal) {
            return;
        }
        if let Some(last) = events.last() {
            event.progress = event.progress.max(last.progress);
        }
        tracing::debug!(progress = event.progress, message = %event.message, "progress");
        events.push(event);
        let n = events.len();
        drop(events);
        self.inner.count.send_replace(n);
    }

    /// The events so far.
    pub fn history(&self) -> Vec<ProgressEvent> {
        self.inner.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The last event, if any.
    pub fn last(&self) -> Option<ProgressEvent> {
        self.inner.events.lock().unwrap_or_else(PoisonError::into_inner).last().cloned()
    }

    /// Whether the terminal event is in.
    pub fn is_finished(&self) -> bool {
        self.last().is_some_and(|e| e.is_terminal())
    }

    /// History first, then live events; ends after the terminal event.
    pub fn subscribe(&self) -> BoxStream<'static, ProgressEvent> {
        let inner = self.inner.clone();
        let rx = inner.count.subscribe();
        futures::stream::unfold((inner, rx, 0usize, false), |(inner, mut rx, next, done)| async move {
            if done {
                return None;
            }
            loop {
                let event = inner.events.lock().unwrap_or_else(PoisonError::into_inner).get(next).cloned();
                if let Some(event) = event {
                    let done = event.is_terminal();
                    return Some((event, (inner, rx, next + 1, done)));
                }
                // Sender lives in `inner`, which we hold: changed() only fails if it is dropped.
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_subscribers_get_history_then_live_events_and_the_stream_ends() {
        let p = Progress::default();
        p.push(ProgressEvent::step(10, "a"));
        p.push(ProgressEvent::step(5, "b"));
        let stream = p.subscribe();
        let live = p.clone();
        tokio::spawn(async move {
            live.push(ProgressEvent::step(50, "c"));
            live.push(ProgressEvent::ready("http://u"));
            live.push(ProgressEvent::step(60, "after the end"));
        });
        let got: Vec<ProgressEvent> = stream.collect().await;
        let msgs: Vec<(&str, u8)> = got.iter().map(|e| (e.message.as_str(), e.progress)).collect();
        assert_eq!(msgs, [("a", 10), ("b", 10), ("c", 50), ("Server ready at http://u", 100)]);
        assert!(p.is_finished());
        // After the end, a new subscriber replays everything and ends.
        assert_eq!(p.subscribe().collect::<Vec<_>>().await.len(), 4);
    }
}
