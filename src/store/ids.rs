//! Ids in the original's format: `worker_<epoch ms>_<9 base-36 chars>`, `task_<epoch ms>_<9 ...>`.

use super::Millis;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `prefix_<ms>_<9 random base-36 chars>`.
pub fn new_id(prefix: &str, now: Millis) -> String {
    let mut bits = random_u64();
    let mut id = String::with_capacity(prefix.len() + 31);
    id.push_str(prefix);
    id.push('_');
    id.push_str(itoa::Buffer::new().format(now));
    id.push('_');
    for _ in 0..9 {
        id.push(char::from(BASE36[(bits % 36) as usize]));
        bits /= 36;
    }
    id
}

/// How many ids' worth of the kernel's randomness one `getrandom` fetches.
const POOL_WORDS: usize = 32;

thread_local! {
    /// Random words from the kernel, not yet used: ids take from here, one system call per
    /// [`POOL_WORDS`] ids instead of one per id. Each word is used once.
    static POOL: std::cell::RefCell<([u64; POOL_WORDS], usize)> = const { std::cell::RefCell::new(([0; POOL_WORDS], POOL_WORDS)) };
}

/// 64 bits straight from the kernel's CSPRNG (through the per-thread pool). Only 9 base-36
/// digits (46.5 bits) of it are used.
fn random_u64() -> u64 {
    POOL.with_borrow_mut(|(words, next)| {
        if *next == POOL_WORDS {
            if !fill_from_kernel(words) {
                return uuid::Uuid::new_v4().as_u64_pair().0;
            }
            *next = 0;
        }
        let word = words[*next];
        *next += 1;
        word
    })
}

/// Fills `words` with `getrandom(2)`; false if the kernel would not (then nothing is used).
fn fill_from_kernel(words: &mut [u64; POOL_WORDS]) -> bool {
    let mut bytes = [0u8; POOL_WORDS * 8];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`, which is valid for writes.
        let n = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if let Ok(n @ 1..) = usize::try_from(n) {
            filled += n;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_ne_bytes(b);
    }
    true
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

    /// Ids drawn across several refills of the pool are all different and use all 36 digits.
    #[test]
    fn ids_across_refills_differ() {
        let ids: std::collections::HashSet<String> = (0..POOL_WORDS * 10).map(|_| new_id("w", 1)).collect();
        assert_eq!(ids.len(), POOL_WORDS * 10);
        let digits: std::collections::HashSet<char> = ids.iter().flat_map(|id| id[4..].chars()).collect();
        assert_eq!(digits.len(), 36, "{digits:?}");
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
