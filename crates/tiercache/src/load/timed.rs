//! Waiting under a soft and a hard timeout, for a load and for a wait on another caller's load,
//! single or batch: the one routine every timed wait goes through.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// When a wait stops: at the soft deadline it hands the future back still running, at the hard
/// one it drops it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deadlines {
    pub(crate) soft: Option<Instant>,
    pub(crate) hard: Option<Instant>,
}

impl Deadlines {
    /// The deadlines `soft` and `hard` after now. The soft one only counts when it comes before
    /// the hard one.
    pub(crate) fn after(soft: Option<Duration>, hard: Option<Duration>) -> Self {
        let now = Instant::now();
        let soft = soft.filter(|soft| hard.is_none_or(|hard| *soft < hard));
        Self {
            soft: soft.and_then(|soft| now.checked_add(soft)),
            hard: hard.and_then(|hard| now.checked_add(hard)),
        }
    }

    /// The same deadlines with the hard one no later than `bound` from now.
    pub(crate) fn at_most(self, bound: Duration) -> Self {
        let cap = Instant::now().checked_add(bound);
        let hard = match (self.hard, cap) {
            (Some(hard), Some(cap)) => Some(hard.min(cap)),
            (hard, cap) => hard.or(cap),
        };
        Self { hard, ..self }
    }

    /// The same deadlines without the soft one.
    pub(crate) fn hard_only(self) -> Self {
        Self { soft: None, ..self }
    }
}

/// How a timed wait ended.
pub(crate) enum Timed<O, F> {
    Done(O),
    /// The soft deadline passed; the future is handed back, still running.
    Soft(F),
    /// The hard deadline passed; the future was dropped.
    Hard,
}

/// Runs `future` until it ends or a deadline passes.
pub(crate) async fn run_timed<F: Future + Unpin>(
    mut future: F,
    deadlines: Deadlines,
) -> Timed<F::Output, F> {
    if let Some(soft) = deadlines.soft {
        return match tokio::time::timeout_at(soft, &mut future).await {
            Ok(output) => Timed::Done(output),
            Err(_) => Timed::Soft(future),
        };
    }
    match deadlines.hard {
        Some(hard) => match tokio::time::timeout_at(hard, &mut future).await {
            Ok(output) => Timed::Done(output),
            Err(_) => Timed::Hard,
        },
        None => Timed::Done(future.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_soft_deadline_hands_the_future_back_and_the_hard_one_drops_it() {
        let slow = || Box::pin(tokio::time::sleep(Duration::from_secs(10)));
        let deadlines = Deadlines::after(
            Some(Duration::from_millis(10)),
            Some(Duration::from_millis(30)),
        );
        let Timed::Soft(running) = run_timed(slow(), deadlines).await else {
            panic!("the soft deadline comes first");
        };
        assert!(matches!(
            run_timed(running, deadlines.hard_only()).await,
            Timed::Hard
        ));

        let quick = Box::pin(async { 7 });
        assert!(matches!(run_timed(quick, deadlines).await, Timed::Done(7)));
        let ignored_soft =
            Deadlines::after(Some(Duration::from_secs(3)), Some(Duration::from_secs(2)));
        assert!(
            ignored_soft.soft.is_none(),
            "a soft timeout past the hard one does not count"
        );
    }
}
