//! The Huffman code of RFC 7541 Appendix B and its decoder (§5.2).
//!
//! Decoding walks the input four bits at a time through a state machine built at compile
//! time from the code table: a state is a branch node of the code tree (a complete prefix
//! code of 257 symbols has 256 of them), and each of its 16 steps says which node the
//! four bits lead to and whether they completed a symbol on the way (no code is shorter
//! than five bits, so at most one). One table lookup per nibble instead of one branch per
//! bit, and no allocation: the caller's scratch buffer is reused.

use super::Error;

// The code table of RFC 7541 Appendix B, copied from the `h2` crate
// (src/hpack/huffman/table.rs, MIT licence, Copyright (c) 2017 h2 authors), which generated
// it from the RFC; checked against the `hpack` crate's independent transcription. Code of
// symbol i, left to right, in its CODE_LENGTHS[i] low bits. EOS (symbol 256) is EOS_CODE.
#[rustfmt::skip]
const CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

#[rustfmt::skip]
const CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// EOS, 30 ones (Appendix B): never sent as a symbol; its leading bits are the padding.
const EOS_CODE: u32 = 0x3fff_ffff;
const EOS_LENGTH: u8 = 30;
const EOS: u16 = 256;

/// A child in the code tree: a branch node's index, or `LEAF | symbol`. The root, node 0,
/// is nobody's child, so 0 marks a child not (yet) assigned.
const LEAF: u16 = 0x8000;
const UNSET: u16 = 0;

/// Branch nodes of a complete binary tree with 257 leaves.
const NODES: usize = 256;

const fn code(symbol: usize) -> (u32, u8) {
    if symbol == EOS as usize {
        (EOS_CODE, EOS_LENGTH)
    } else {
        (CODES[symbol], CODE_LENGTHS[symbol])
    }
}

/// The code tree, `[node][bit]`. Built at compile time: an index out of bounds or a failed
/// assertion here (a code that is not prefix-free or not complete) fails the build, and
/// cannot happen at run time.
const fn tree() -> [[u16; 2]; NODES] {
    let mut nodes = [[UNSET; 2]; NODES];
    let mut count = 1;
    let mut symbol = 0;
    while symbol <= EOS as usize {
        let (code, length) = code(symbol);
        let mut node = 0;
        let mut bit = length;
        while bit > 1 {
            bit -= 1;
            let side = ((code >> bit) & 1) as usize;
            let child = nodes[node][side];
            if child == UNSET {
                nodes[node][side] = count as u16;
                node = count;
                count += 1;
            } else {
                assert!(child & LEAF == 0, "a code is a prefix of another");
                node = child as usize;
            }
        }
        let side = (code & 1) as usize;
        assert!(nodes[node][side] == UNSET, "a code is a prefix of another");
        nodes[node][side] = LEAF | symbol as u16;
        symbol += 1;
    }
    assert!(count == NODES, "the code is not complete");
    nodes
}

/// What four bits do from a state.
#[derive(Clone, Copy)]
struct Step {
    /// The node they lead to (the root after a completed symbol).
    next: u8,
    /// The symbol they completed, when `flags & EMIT`.
    symbol: u8,
    flags: u8,
}

const EMIT: u8 = 1;
/// They completed EOS, an error in a string (§5.2).
const FAIL: u8 = 2;

const fn steps() -> [[Step; 16]; NODES] {
    let nodes = tree();
    let mut steps = [[Step {
        next: 0,
        symbol: 0,
        flags: 0,
    }; 16]; NODES];
    let mut state = 0;
    while state < NODES {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut step = Step {
                next: 0,
                symbol: 0,
                flags: 0,
            };
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = nodes[node][(nibble >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else {
                    let symbol = child & !LEAF;
                    if symbol == EOS {
                        step.flags |= FAIL;
                    } else {
                        assert!(step.flags & EMIT == 0, "two symbols in four bits");
                        step.flags |= EMIT;
                        step.symbol = symbol as u8;
                    }
                    node = 0;
                }
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

/// The states a string may end in (§5.2): the root, or up to seven 1 bits into a code,
/// which are then padding, the most significant bits of EOS. Eight or more ones, or any
/// 0 bit, after the last symbol is an error.
const fn accepting() -> [bool; NODES] {
    let nodes = tree();
    let mut accept = [false; NODES];
    let mut node = 0;
    let mut depth = 0;
    accept[0] = true;
    while depth < 7 {
        let child = nodes[node][1];
        assert!(child & LEAF == 0, "a code of fewer than 8 ones");
        node = child as usize;
        accept[node] = true;
        depth += 1;
    }
    accept
}

static STEPS: [[Step; 16]; NODES] = steps();
static ACCEPT: [bool; NODES] = accepting();

/// Decodes the Huffman-coded string `src` into `dst` (cleared first).
pub(super) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Error> {
    dst.clear();
    // At most one symbol per five bits.
    dst.reserve(src.len().saturating_mul(8) / 5);
    let mut state = 0u8;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            // In bounds: a u8 state into 256 rows, a nibble (below 16) into 16 columns.
            let step = STEPS[usize::from(state)][usize::from(nibble)];
            if step.flags & FAIL != 0 {
                return Err(Error::Huffman);
            }
            if step.flags & EMIT != 0 {
                dst.push(step.symbol);
            }
            state = step.next;
        }
    }
    if ACCEPT[usize::from(state)] {
        Ok(())
    } else {
        Err(Error::Huffman)
    }
}

/// Huffman-codes `src` onto `dst`: tether's encoder never does (RFC 7541 lets it), but the
/// decoder's tests need strings to decode.
#[cfg(test)]
pub(super) fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut bits: u64 = 0;
    let mut count = 0u32;
    for &byte in src {
        let (code, length) = code(usize::from(byte));
        bits = (bits << length) | u64::from(code);
        count += u32::from(length);
        while count >= 8 {
            count -= 8;
            dst.push((bits >> count) as u8);
        }
    }
    if count > 0 {
        // Padded with the most significant bits of EOS.
        dst.push(((bits << (8 - count)) as u8) | (0xff >> count));
    }
}
