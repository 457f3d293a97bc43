//! `--demo-tasks`: the original's sample source. Every 20 s, while some worker is active and
//! fewer than 3 tasks wait, one of its 20 prompts is queued, in random order, none twice.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::hub::Queue;

pub const PROMPTS: [&str; 20] = [
    "What is the capital of Norway?",
    "Name three primary colors.",
    "What is 7 x 8?",
    "Write a simple Python function that adds two numbers.",
    "Explain photosynthesis in one sentence.",
    "Calculate 15% of 200.",
    "Translate 'Hello world' to Spanish.",
    "Search for today's weather in New York.",
    "Create a basic HTML structure for a webpage.",
    "Find the latest news about AI developments.",
    "Write a haiku about winter.",
    "Look up the current price of Bitcoin.",
    "What is the square root of 64?",
    "List three benefits of exercise.",
    "Search for recent SpaceX launches.",
    "What currency is used in Japan?",
    "Write a JSON object with name and age fields.",
    "Find today's top trending topics on social media.",
    "What does CPU stand for?",
    "Look up the latest scientific breakthroughs in 2025.",
];

/// The original's rhythm.
pub const INTERVAL: Duration = Duration::from_secs(20);
const MAX_WAITING: u64 = 3;

/// Takes a random prompt out of `left`.
fn pick(left: &mut Vec<&'static str>) -> Option<&'static str> {
    if left.is_empty() {
        return None;
    }
    let r = (uuid::Uuid::new_v4().as_u128() % left.len() as u128) as usize;
    Some(left.swap_remove(r))
}

/// Runs until `shutdown`, or until the 20 prompts are used up.
pub async fn run(queue: Arc<Queue>, interval: Duration, shutdown: CancellationToken) {
    let mut left: Vec<&'static str> = PROMPTS.to_vec();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        let store = queue.store();
        let state = match store.any_active_worker().await {
            Ok(active) => store.counts().await.map(|c| (active, c.queued)),
            Err(err) => Err(err),
        };
        match state {
            Ok((true, waiting)) if waiting < MAX_WAITING => {
                let Some(prompt) = pick(&mut left) else {
                    tracing::info!("no more demo prompts");
                    return;
                };
                match queue.enqueue(vec![prompt.to_owned()]).await {
                    Ok(ids) => tracing::info!(task_id = ?ids.first(), prompt, "demo task queued"),
                    Err(err) => tracing::warn!(error = %err, "cannot queue a demo task"),
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "demo source cannot read the store"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_every_prompt_once() {
        let mut left = PROMPTS.to_vec();
        let mut seen: Vec<_> = std::iter::from_fn(|| pick(&mut left)).collect();
        assert_eq!(seen.len(), 20);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 20);
    }
}
