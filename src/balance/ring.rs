//! The consistent-hash table (Maglev hashing, Eisenbud et al., NSDI 2016).
//!
//! Why Maglev rather than a ring of virtual nodes: each endpoint owns its weighted share
//! of slots to within one slot, so new sessions spread evenly without thousands of
//! virtual nodes, and a lookup is one modulo and one array read whatever the size.
//! Removing an endpoint reassigns its slots and disturbs only a small fraction of other
//! slots; tether never moves a sticky session because of that, since a session with a
//! valid cookie goes to its pinned endpoint while that endpoint is eligible. The table
//! only decides where new and failed-over sessions go.
//!
//! "Ring order" for a key is the walk from its slot through the following slots: the
//! first entry is the owner, the next distinct endpoints are where it goes if the owner
//! cannot take it (connect failure, passive health). The table is a pure function of
//! the members' identities and weights (sorted first), so every replica builds the same.

use super::hash;

const EMPTY: u32 = u32::MAX;

/// A member of the table: an eligible endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Stable identity (pod name, or address when there is none); what is hashed.
    pub identity: &'a str,
    /// Relative share of slots.
    pub weight: u32,
    /// What the table stores for this member: the caller's endpoint index.
    pub index: u32,
}

/// The smallest prime at or above `n` (n ≥ 2; trial division is quick below 2^23).
fn next_prime(n: u64) -> u64 {
    let is_prime = |k: u64| k >= 2 && (2..).take_while(|d| d * d <= k).all(|d| k % d != 0);
    (n..).find(|&k| is_prime(k)).unwrap_or(n)
}

/// An immutable lookup table from key hash to endpoint index.
#[derive(Debug, Clone)]
pub struct Ring {
    table: Box<[u32]>,
}

impl Ring {
    /// The prime table size for a total weight: the first prime at or above 32 slots
    /// per weight unit, and at least 4,099. Maglev gives every member its weighted
    /// number of slots to within one slot, so a share is exact to within 1/32 (3%) at
    /// worst, far finer with few endpoints (4 pods: ~1,025 slots each). The size is
    /// also the build cost (each slot is one turn of the fill), so a small backend's
    /// table is rebuilt quickly (`benches/` holds the figures).
    pub fn table_size(total_weight: u64) -> u64 {
        const MIN: u64 = 4_099;
        // 2^22 slots (16 MiB of table) is plenty for any sane total weight.
        const MAX_BASE: u64 = 1 << 22;
        next_prime(total_weight.saturating_mul(32).clamp(MIN, MAX_BASE))
    }

    /// Builds the table. Member order does not matter: members are sorted by identity.
    pub fn build(members: &[Member<'_>]) -> Ring {
        if members.is_empty() {
            return Ring {
                table: Box::new([]),
            };
        }
        let mut members = members.to_vec();
        members.sort_unstable_by(|a, b| a.identity.cmp(b.identity));
        let total: u64 = members.iter().map(|m| u64::from(m.weight.max(1))).sum();
        let m = Self::table_size(total);
        let mut pos: Vec<(u64, u64)> = members
            .iter()
            .map(|mb| hash::permutation(mb.identity, m))
            .collect();
        let mut table = vec![EMPTY; m as usize].into_boxed_slice();
        let mut filled = 0u64;
        'fill: loop {
            for (i, mb) in members.iter().enumerate() {
                for _ in 0..mb.weight.max(1) {
                    let (cur, skip) = &mut pos[i];
                    loop {
                        let c = *cur as usize;
                        *cur += *skip;
                        if *cur >= m {
                            *cur -= m;
                        }
                        if table[c] == EMPTY {
                            table[c] = mb.index;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Ring { table }
    }

    /// True when the table has no members.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The endpoint index that owns `key`.
    #[inline]
    pub fn owner(&self, key: u64) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(key % self.table.len() as u64) as usize])
    }

    /// The table entries in ring order from `key`'s slot (one full turn at most).
    /// Entries repeat; callers keep the distinct ones they need.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = u32> + '_ {
        let len = self.table.len();
        let start = if len == 0 {
            0
        } else {
            (key % len as u64) as usize
        };
        self.table[start..]
            .iter()
            .chain(&self.table[..start])
            .copied()
    }

    /// Slots owned by each endpoint index, for diagnostics (share = slots / total).
    pub fn slots(&self) -> ahash::AHashMap<u32, usize> {
        let mut out = ahash::AHashMap::new();
        for &e in self.table.iter() {
            *out.entry(e).or_insert(0) += 1;
        }
        out
    }

    /// Total number of slots.
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[String]) -> Vec<Member<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Member {
                identity: n,
                weight: 1,
                index: i as u32,
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pod-{i}")).collect()
    }

    #[test]
    fn table_sizes_are_primes_with_enough_slots_per_weight_unit() {
        assert_eq!(Ring::table_size(1), 4_099);
        for w in [1u64, 4, 100, 129, 1_000, 10_000, 100_000] {
            let m = Ring::table_size(w);
            assert!(m >= 32 * w && m >= 4_099, "{w}: {m}");
            assert!((2..).take_while(|d| d * d <= m).all(|d| m % d != 0), "{m}");
        }
    }

    #[test]
    fn shares_are_equal_to_within_a_slot() {
        let n = names(7);
        let slots = Ring::build(&members(&n)).slots();
        let (min, max) = (slots.values().min().unwrap(), slots.values().max().unwrap());
        assert!(max - min <= 1, "{slots:?}");
    }

    #[test]
    fn weights_scale_shares() {
        let n = names(2);
        let mut m = members(&n);
        m[1].weight = 3;
        let slots = Ring::build(&m).slots();
        let ratio = slots[&1] as f64 / slots[&0] as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
    }

    #[test]
    fn input_order_does_not_change_the_table() {
        let n = names(5);
        let a = Ring::build(&members(&n));
        let mut shuffled = members(&n);
        shuffled.reverse();
        let b = Ring::build(&shuffled);
        assert_eq!(a.table, b.table);
    }

    #[test]
    fn removing_a_member_reassigns_its_slots_and_few_others() {
        let n = names(10);
        let before = Ring::build(&members(&n));
        let fewer: Vec<_> = members(&n).into_iter().filter(|m| m.index != 3).collect();
        let after = Ring::build(&fewer);
        let mut others_moved = 0;
        for (a, b) in before.table.iter().zip(after.table.iter()) {
            if *a == 3 {
                assert_ne!(*b, 3);
            } else if a != b {
                others_moved += 1;
            }
        }
        // Maglev's disruption for other members is small; stickiness hides it entirely.
        assert!(others_moved < before.len() / 20, "{others_moved}");
    }

    #[test]
    fn walk_starts_at_the_owner_and_covers_everyone() {
        let n = names(4);
        let r = Ring::build(&members(&n));
        for key in [0u64, 17, u64::MAX] {
            let mut w = r.walk(key);
            assert_eq!(w.next(), r.owner(key));
            let mut seen: Vec<u32> = r.walk(key).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen, vec![0, 1, 2, 3]);
        }
        assert_eq!(Ring::build(&[]).owner(5), None);
    }
}
