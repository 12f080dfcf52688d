//! The route automaton as the classifier walks it: the DFA that regex-automata
//! determinizes, re-encoded once at load time into one flat array of `u32` words.
//!
//! Why not walk regex-automata's own encodings: its dense table is one row per state
//! (14 MiB at 10,000 synthetic rules, far past a core's L2 cache) and its sparse one
//! decodes every state's transition ranges byte by byte. Route DFAs have a shape this
//! encoding exploits:
//!
//! * **Runs.** Most states have exactly one way out: the next byte of a literal
//!   (`/resource`, `/files`). A chain of such states, none of which can end a match and
//!   none of which is entered from elsewhere, becomes one *run*: the expected byte
//!   classes, four to a word, compared against the input without a state load per byte.
//! * **Default and exceptions.** Every other state keeps a default target (the one most
//!   classes lead to: itself inside a `{param}`, mostly the dead state elsewhere) and
//!   the few classes that go elsewhere, found with one word-wide compare per four
//!   classes; only exceptions that lead somewhere other than the dead state store a
//!   target. A state where that would outweigh a full row keeps the row instead.
//! * **Acceleration.** A state whose default is itself and which only up to three bytes
//!   leave (`/` inside a parameter) is skipped with `memchr`; a single such byte is kept
//!   in the state's header.
//! * **End of input is not a transition.** A state where a request can end holds what
//!   it matches: one pattern, or a list of patterns (ascending, so the first whose
//!   `when` holds wins); other states hold nothing for it.
//! * **Layout.** States are placed depth-first from the start, so the states one route
//!   alone uses (its last literal, its parameter, its match) are adjacent in memory.
//!
//! Word 0 is the dead state: a walk that reaches it stops and matches nothing.

use regex_automata::dfa::{dense, Automaton};
use regex_automata::util::primitives::StateID;

/// The state from which no request matches.
pub(super) const DEAD: u32 = 0;

/// Header flag: the state is a run of literal byte classes. A run is
/// `[header, next, classes...]`, its length in the low 16 bits of the header.
const RUN: u32 = 1 << 31;
/// The longest run one state holds; a longer literal continues in the next one.
const MAX_RUN: usize = 0xFFFF;

// Any other state is `[header, default, eoi?, accelerator?, body...]`.
/// Header flag: the body is a full row, one target per byte class.
const ROW: u32 = 1 << 30;
/// Header flag: an end-of-input word follows the default (without it nothing ends here).
const EOI: u32 = 1 << 28;
/// Header flag: an accelerator word (two or three exit bytes and their count) follows.
const ACCEL_WORD: u32 = 1 << 27;
/// Header flag: the state's one exit byte is in the header, at [`ACCEL_BYTE_SHIFT`].
const ACCEL_BYTE: u32 = 1 << 26;
const ACCEL_BYTE_SHIFT: u32 = 18;
/// Without [`ROW`] the body is `n` exception classes, four to a word, then the targets
/// of the first `m` of them: the rest lead to the dead state. `n` and `m` are 9-bit
/// header fields (a DFA has at most 256 byte classes).
const FIELD: u32 = 0x1FF;
const M_SHIFT: u32 = 9;

/// A state's end-of-input word: `SINGLE | pattern` for exactly one pattern, otherwise
/// the offset of `[len, pattern...]` in [`Packed::lists`]. `0` (what a walk returns
/// when nothing can match) is never an offset: `lists[0]` is unused.
const SINGLE: u32 = 1 << 31;

/// What a request ending in some state matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Matches<'a> {
    None,
    One(u32),
    /// Ascending pattern IDs.
    Many(&'a [u32]),
}

/// The re-encoded automaton. Immutable.
#[derive(Debug)]
pub(super) struct Packed {
    /// Byte to byte class (regex-automata's equivalence classes).
    classes: [u8; 256],
    /// The states, addressed by word offset.
    words: Vec<u32>,
    /// Pattern lists of states that end more than one pattern: `[len, pattern...]`.
    lists: Vec<u32>,
}

impl Packed {
    /// Heap bytes held (the class map is inline).
    pub(super) fn memory_usage(&self) -> usize {
        (self.words.capacity() + self.lists.capacity()) * std::mem::size_of::<u32>()
    }

    /// What a request ending at `eoi` (a state's end-of-input word, as
    /// [`Packed::walk`] returns it) matches.
    #[inline]
    pub(super) fn matches(&self, eoi: u32) -> Matches<'_> {
        if eoi == 0 {
            Matches::None
        } else if eoi & SINGLE != 0 {
            Matches::One(eoi & !SINGLE)
        } else {
            let at = eoi as usize;
            let len = self.lists[at] as usize;
            Matches::Many(&self.lists[at + 1..at + 1 + len])
        }
    }

    /// Walk `parts` (concatenated) from `state` and return the end-of-input word of the
    /// state reached: `0` when the input dies on the way or ends where nothing matches.
    #[inline]
    pub(super) fn walk(&self, mut state: u32, parts: &[&[u8]]) -> u32 {
        let w = &self.words[..];
        // Inside a run: how many of its classes have been matched (a run can span parts).
        let mut pos = 0usize;
        if state == DEAD {
            return 0;
        }
        for part in parts {
            let mut at = 0;
            while at < part.len() {
                let s = state as usize;
                let header = w[s];
                if header & RUN != 0 {
                    let len = (header & MAX_RUN as u32) as usize;
                    let take = (len - pos).min(part.len() - at);
                    let expected = &w[s + 2..s + 2 + len.div_ceil(4)];
                    if !self.run_matches(expected, pos, &part[at..at + take]) {
                        return 0;
                    }
                    at += take;
                    pos += take;
                    if pos == len {
                        pos = 0;
                        state = w[s + 1];
                    }
                    continue;
                }
                let eoi = ((header & EOI) != 0) as usize;
                let mut body = s + 2 + eoi;
                if header & (ACCEL_BYTE | ACCEL_WORD) != 0 {
                    let rest = &part[at..];
                    let skip = if header & ACCEL_BYTE != 0 {
                        memchr::memchr((header >> ACCEL_BYTE_SHIFT) as u8, rest)
                    } else {
                        body += 1;
                        match w[body - 1].to_le_bytes() {
                            [a, b, _, 2] => memchr::memchr2(a, b, rest),
                            [a, b, c, _] => memchr::memchr3(a, b, c, rest),
                        }
                    };
                    match skip {
                        Some(k) => at += k,
                        None => break,
                    }
                }
                let class = self.classes[usize::from(part[at])];
                at += 1;
                state = if header & ROW != 0 {
                    w[body + usize::from(class)]
                } else {
                    let n = (header & FIELD) as usize;
                    let live = (header >> M_SHIFT & FIELD) as usize;
                    let words = n.div_ceil(4);
                    match find(&w[body..body + words], n, class) {
                        Some(i) if i < live => w[body + words + i],
                        Some(_) => DEAD,
                        None => w[s + 1],
                    }
                };
                if state == DEAD {
                    return 0;
                }
            }
        }
        let header = w[state as usize];
        if header & (RUN | EOI) != EOI {
            // A run (built only from states where no match can end), or a state
            // without an end-of-input word.
            return 0;
        }
        w[state as usize + 2]
    }
}

impl Packed {
    /// Do the classes of `input` equal the run's classes `expected` (four to a word)
    /// from position `pos` on? Compares a word at a time.
    #[inline]
    fn run_matches(&self, expected: &[u32], mut pos: usize, mut input: &[u8]) -> bool {
        let class = |b: u8| self.classes[usize::from(b)];
        // Up to a word boundary: only when the run continues from an earlier part.
        while !pos.is_multiple_of(4) {
            let Some((&b, rest)) = input.split_first() else {
                return true;
            };
            if class(b) != (expected[pos / 4] >> (8 * (pos % 4))) as u8 {
                return false;
            }
            input = rest;
            pos += 1;
        }
        let expected = &expected[pos / 4..];
        let mut chunks = input.chunks_exact(4);
        for (chunk, &want) in (&mut chunks).zip(expected) {
            let got = u32::from_le_bytes([
                class(chunk[0]),
                class(chunk[1]),
                class(chunk[2]),
                class(chunk[3]),
            ]);
            if got != want {
                return false;
            }
        }
        let tail = chunks.remainder();
        if tail.is_empty() {
            return true;
        }
        let mut got = 0u32;
        for (j, &b) in tail.iter().enumerate() {
            got |= u32::from(class(b)) << (8 * j);
        }
        let mask = u32::MAX >> (8 * (4 - tail.len()));
        got == expected[input.len() / 4] & mask
    }
}

/// The index of `class` among the first `n` classes packed four to a word in `packed`.
#[inline]
fn find(packed: &[u32], n: usize, class: u8) -> Option<usize> {
    const ONES: u32 = 0x0101_0101;
    const HIGHS: u32 = 0x8080_8080;
    let splat = u32::from(class) * ONES;
    for (k, &word) in packed.iter().enumerate() {
        // A zero byte in `v` is a class equal to `class`; the lowest flagged byte of
        // `zero` is the first such (higher ones may be borrow artefacts).
        let v = word ^ splat;
        let zero = v.wrapping_sub(ONES) & !v & HIGHS;
        if zero != 0 {
            let i = k * 4 + zero.trailing_zeros() as usize / 8;
            // Past `n` is padding: then no real class in this word matched.
            return (i < n).then_some(i);
        }
    }
    None
}

/// Pack `classes` four to a word, first in the low byte.
fn pack_classes(classes: &[u8], out: &mut Vec<u32>) {
    for chunk in classes.chunks(4) {
        let mut bytes = [0u8; 4];
        bytes[..chunk.len()].copy_from_slice(chunk);
        out.push(u32::from_le_bytes(bytes));
    }
}

/// What the packer needs to know about one DFA state.
struct Source<'d> {
    dfa: &'d dense::DFA<Vec<u32>>,
    /// A byte of each class, by class (end of input excluded).
    representative: Vec<u8>,
    /// Bytes of each class, by class.
    members: Vec<Vec<u8>>,
}

impl Source<'_> {
    fn index(&self, id: StateID) -> usize {
        id.as_usize() >> self.dfa.stride2()
    }

    fn id(&self, index: usize) -> StateID {
        // In range: every index comes from `index` of a real state.
        StateID::new(index << self.dfa.stride2()).expect("a DFA state id")
    }

    /// The target (as a state index, 0 for dead) of each byte class.
    fn targets(&self, index: usize, out: &mut Vec<usize>) {
        let id = self.id(index);
        out.clear();
        out.extend(
            self.representative
                .iter()
                .map(|&b| self.index(self.dfa.next_state(id, b))),
        );
    }

    /// Ascending patterns matched when the input ends in this state.
    fn eoi_patterns(&self, index: usize) -> Vec<u32> {
        let eoi = self.dfa.next_eoi_state(self.id(index));
        if !self.dfa.is_match_state(eoi) {
            return Vec::new();
        }
        let mut out: Vec<u32> = (0..self.dfa.match_len(eoi))
            .map(|i| self.dfa.match_pattern(eoi, i).as_u32())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Re-encode `dfa`: every state reachable from `roots` (which must not be quit states).
/// Returns the automaton and the state of each root in it.
pub(super) fn pack(
    dfa: &dense::DFA<Vec<u32>>,
    roots: &[StateID],
) -> Result<(Packed, Vec<u32>), String> {
    let bc = dfa.byte_classes();
    let nclasses = bc.alphabet_len() - 1;
    let mut classes = [0u8; 256];
    let mut representative = vec![0u8; nclasses];
    let mut members: Vec<Vec<u8>> = vec![Vec::new(); nclasses];
    for b in (0..=255u8).rev() {
        let c = usize::from(bc.get(b));
        classes[usize::from(b)] = bc.get(b);
        representative[c] = b;
        members[c].push(b);
    }
    let src = Source {
        dfa,
        representative,
        members,
    };
    let dead = src.index(StateID::ZERO);
    debug_assert_eq!(dead, 0);

    // Every reachable state, and how many transitions enter it (roots count as many:
    // they must stay addressable).
    let mut indegree: Vec<u32> = Vec::new();
    let seen = |i: usize, indegree: &mut Vec<u32>| {
        if i >= indegree.len() {
            indegree.resize(i + 1, u32::MAX);
        }
        let fresh = indegree[i] == u32::MAX;
        if fresh {
            indegree[i] = 0;
        }
        fresh
    };
    let mut stack: Vec<usize> = Vec::new();
    for &root in roots {
        if dfa.is_quit_state(root) {
            return Err("the route automaton has a quit state".into());
        }
        let i = src.index(root);
        if i != dead && seen(i, &mut indegree) {
            stack.push(i);
        }
    }
    let mut targets = Vec::with_capacity(nclasses);
    while let Some(i) = stack.pop() {
        src.targets(i, &mut targets);
        for &t in &targets {
            if t == dead {
                continue;
            }
            if dfa.is_quit_state(src.id(t)) {
                return Err("the route automaton has a quit state".into());
            }
            if seen(t, &mut indegree) {
                stack.push(t);
            }
            indegree[t] += 1;
        }
    }
    for &root in roots {
        let i = src.index(root);
        if i != dead {
            indegree[i] = u32::MAX - 1;
        }
    }

    // Lay the states out depth-first. Target words hold DFA state indices until every
    // state has its offset; `fixups` lists where they are.
    const UNPLACED: u32 = u32::MAX;
    let mut offset: Vec<u32> = vec![UNPLACED; indegree.len()];
    offset[dead] = DEAD;
    // The dead state: no exceptions, default dead, nothing ends here.
    let mut words: Vec<u32> = vec![0, DEAD];
    let mut lists: Vec<u32> = vec![0];
    let mut fixups: Vec<usize> = Vec::new();
    let mut runnable_targets = Vec::with_capacity(nclasses);
    // A state that one byte class leaves (to a live state) and where no match ends:
    // its class and target.
    let runnable = |i: usize, scratch: &mut Vec<usize>| -> Option<(u8, usize)> {
        src.targets(i, scratch);
        let mut live = scratch.iter().enumerate().filter(|(_, &t)| t != dead);
        let (c, &t) = live.next()?;
        if live.next().is_some() || !src.eoi_patterns(i).is_empty() {
            return None;
        }
        Some((c as u8, t))
    };
    stack.clear();
    for &root in roots.iter().rev() {
        stack.push(src.index(root));
    }
    while let Some(i) = stack.pop() {
        if offset[i] != UNPLACED {
            continue;
        }
        let here = u32::try_from(words.len()).map_err(|_| "route automaton too large")?;
        offset[i] = here;
        if let Some((c, mut next)) = runnable(i, &mut runnable_targets) {
            let mut run = vec![c];
            while run.len() < MAX_RUN && indegree[next] == 1 && offset[next] == UNPLACED {
                let Some((c, after)) = runnable(next, &mut runnable_targets) else {
                    break;
                };
                // Swallowed: only this run enters it.
                offset[next] = here;
                run.push(c);
                next = after;
            }
            words.push(RUN | run.len() as u32);
            fixups.push(words.len());
            words.push(next as u32);
            pack_classes(&run, &mut words);
            stack.push(next);
            continue;
        }
        src.targets(i, &mut targets);
        let default = most_common(&targets);
        // Exceptions with a live target first, then those leading to the dead state.
        let mut exceptions: Vec<u8> = (0..nclasses)
            .filter(|&c| targets[c] != default)
            .map(|c| c as u8)
            .collect();
        exceptions.sort_by_key(|&c| targets[usize::from(c)] == dead);
        let live = exceptions
            .iter()
            .filter(|&&c| targets[usize::from(c)] != dead)
            .count();
        let eoi = match src.eoi_patterns(i).as_slice() {
            [] => None,
            [p] if p & SINGLE == 0 => Some(SINGLE | p),
            many => {
                let at = u32::try_from(lists.len())
                    .ok()
                    .filter(|at| at & SINGLE == 0)
                    .ok_or("too many patterns")?;
                lists.push(many.len() as u32);
                lists.extend_from_slice(many);
                Some(at)
            }
        };
        // Bytes that leave a state looping on itself: `memchr` finds the next one.
        let exits: Vec<u8> = if default == i {
            exceptions
                .iter()
                .flat_map(|&c| src.members[usize::from(c)].iter().copied())
                .collect()
        } else {
            Vec::new()
        };
        // A row costs one word per class, exceptions a quarter word each and a word per
        // live target.
        let row = exceptions.len() + 4 * live > nclasses * 4;
        let mut header = if row {
            ROW
        } else {
            exceptions.len() as u32 | (live as u32) << M_SHIFT
        };
        let mut accel_word = None;
        match exits[..] {
            [a] => header |= ACCEL_BYTE | u32::from(a) << ACCEL_BYTE_SHIFT,
            [a, b] => accel_word = Some(u32::from_le_bytes([a, b, 0, 2])),
            [a, b, c] => accel_word = Some(u32::from_le_bytes([a, b, c, 3])),
            _ => {}
        }
        if eoi.is_some() {
            header |= EOI;
        }
        if accel_word.is_some() {
            header |= ACCEL_WORD;
        }
        words.push(header);
        fixups.push(words.len());
        words.push(if row { dead as u32 } else { default as u32 });
        words.extend(eoi);
        words.extend(accel_word);
        if row {
            fixups.extend(words.len()..words.len() + nclasses);
            words.extend(targets.iter().map(|&t| t as u32));
        } else {
            pack_classes(&exceptions, &mut words);
            fixups.extend(words.len()..words.len() + live);
            words.extend(
                exceptions[..live]
                    .iter()
                    .map(|&c| targets[usize::from(c)] as u32),
            );
        }
        // Depth-first, lowest class first.
        for &t in targets.iter().rev() {
            if t != dead && offset[t] == UNPLACED {
                stack.push(t);
            }
        }
    }
    for at in fixups {
        let target = offset[words[at] as usize];
        debug_assert_ne!(target, UNPLACED);
        words[at] = target;
    }
    words.shrink_to_fit();
    lists.shrink_to_fit();
    let starts = roots.iter().map(|&r| offset[src.index(r)]).collect();
    Ok((
        Packed {
            classes,
            words,
            lists,
        },
        starts,
    ))
}

/// The most frequent value (the smallest of equally frequent ones).
fn most_common(targets: &[usize]) -> usize {
    let mut sorted = targets.to_vec();
    sorted.sort_unstable();
    let mut best = (0, sorted[0]);
    let mut k = 0;
    while k < sorted.len() {
        let run = sorted[k..].iter().take_while(|&&t| t == sorted[k]).count();
        if run > best.0 {
            best = (run, sorted[k]);
        }
        k += run;
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_reports_the_first_equal_class_within_n() {
        let mut packed = Vec::new();
        pack_classes(&[7, 0, 3, 3, 9, 1], &mut packed);
        assert_eq!(find(&packed, 6, 7), Some(0));
        assert_eq!(find(&packed, 6, 0), Some(1));
        assert_eq!(find(&packed, 6, 3), Some(2));
        assert_eq!(find(&packed, 6, 9), Some(4));
        assert_eq!(find(&packed, 6, 1), Some(5));
        assert_eq!(find(&packed, 6, 2), None);
        // Padding bytes are zero: class 0 past `n` is not found.
        assert_eq!(find(&packed, 1, 0), None);
        // A borrow from an equal byte must not hide or fake one below it.
        let mut packed = Vec::new();
        pack_classes(&[1, 0, 1, 2], &mut packed);
        assert_eq!(find(&packed, 4, 0), Some(1));
        assert_eq!(find(&packed, 4, 1), Some(0));
        assert_eq!(find(&packed, 4, 2), Some(3));
    }
}
