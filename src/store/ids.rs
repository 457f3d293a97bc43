//! Ids in the original's format: `worker_<epoch ms>_<9 base-36 chars>`, `task_<epoch ms>_<9 ...>`.

use super::Millis;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `prefix_<ms>_<9 random base-36 chars>`.
pub fn new_id(prefix: &str, now: Millis) -> String {
    let mut bits = uuid::Uuid::new_v4().as_u128();
    let mut suffix = String::with_capacity(9);
    for _ in 0..9 {
        suffix.push(char::from(BASE36[(bits % 36) as usize]));
        bits /= 36;
    }
    format!("{prefix}_{now}_{suffix}")
}

/// Whether `id` has the shape `prefix_<digits>_<9 base-36 chars>`.
pub fn is_well_formed(prefix: &str, id: &str) -> bool {
    let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    let Some((ms, suffix)) = rest.split_once('_') else {
        return false;
    };
    !ms.is_empty()
        && ms.bytes().all(|b| b.is_ascii_digit())
        && suffix.len() == 9
        && suffix.bytes().all(|b| BASE36.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_original_shape() {
        let id = new_id("task", 1_700_000_000_123);
        assert!(id.starts_with("task_1700000000123_"), "{id}");
        assert!(is_well_formed("task", &id), "{id}");
        assert!(is_well_formed("worker", &new_id("worker", 5)));
        assert_ne!(new_id("task", 1), new_id("task", 1));
    }

    #[test]
    fn malformed_ids() {
        for bad in [
            "",
            "task",
            "task_",
            "task_12_",
            "task_12_abc",
            "task_x_abcdefghi",
            "worker_1_abcdefghi",
            "task_1_ABCDEFGHI",
        ] {
            assert!(!is_well_formed("task", bad), "{bad}");
        }
    }
}
