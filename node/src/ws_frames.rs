//! Where a client's WebSocket byte stream stands, frame by frame.
//!
//! [`FrameTracker`] follows the frame headers (RFC 6455, 5.2) of the bytes a
//! client sends, without keeping any of them: it only needs to know whether
//! a message has begun and not yet ended, and how large its headers say it
//! is. The WebSocket library buffers an unfinished message until its last
//! byte arrives; [`crate::message_watch`] uses this to bound that.
//!
//! It does not validate: a stream the library refuses (reserved bits, a
//! fragmented control frame, a frame over the size limit) ends the
//! connection anyway, so what the tracker makes of it does not matter.

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key.
const MAX_HEADER: usize = 14;

/// Opcodes from 8 up are control frames (close, ping, pong): never part of
/// a message, and they may come between the frames of one.
const FIRST_CONTROL_OPCODE: u8 = 8;

/// Follows a client's frames; see the module docs.
#[derive(Debug, Default)]
pub struct FrameTracker {
    /// Header bytes of the frame being read, `have` of them so far.
    header: [u8; MAX_HEADER],
    have: u8,
    /// Payload bytes of the current frame still to come, once its header is in.
    left: u64,
    /// The current frame's header is complete and its payload is being read.
    in_payload: bool,
    /// The current frame is a data frame with FIN set (it ends its message).
    ends_message: bool,
    /// A data message has begun (its first frame's header is in) and not ended.
    in_message: bool,
    /// Payload bytes of that message, as its frames' headers state them.
    message_bytes: u64,
    /// Times the stream came to rest (a message or a control frame between
    /// messages ended), so far.
    rests: u64,
}

impl FrameTracker {
    /// Follows `bytes`, the next the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.in_payload {
                let take = bytes
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= take as u64;
                bytes = &bytes[take..];
                if self.left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let Some((&byte, rest)) = bytes.split_first() else {
                break;
            };
            bytes = rest;
            // `have` stays below the header's length (at most 14): the
            // header is taken as complete the moment it reaches it.
            if let Some(slot) = self.header.get_mut(usize::from(self.have)) {
                *slot = byte;
            }
            self.have += 1;
            if usize::from(self.have) >= self.header_len() {
                self.begin_payload();
            }
        }
    }

    /// Whether the client is partway through something: a frame, or a
    /// message of several frames.
    pub fn unfinished(&self) -> bool {
        self.have > 0 || self.in_message
    }

    /// Payload bytes of the message in progress as its headers state them
    /// so far (0 between messages).
    pub fn message_bytes(&self) -> u64 {
        if self.in_message {
            self.message_bytes
        } else {
            0
        }
    }

    /// The length of the header being read (2 until its second byte is in).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    /// The header is complete: start on the payload it announces.
    fn begin_payload(&mut self) {
        let len = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
            short => u64::from(short),
        };
        let fin = self.header[0] & 0x80 != 0;
        let data = self.header[0] & 0x0f < FIRST_CONTROL_OPCODE;
        if data {
            if !self.in_message {
                self.message_bytes = 0;
            }
            self.in_message = true;
            self.message_bytes = self.message_bytes.saturating_add(len);
        }
        self.ends_message = data && fin;
        self.left = len;
        self.in_payload = true;
        if len == 0 {
            self.end_frame();
        }
    }

    /// Times the stream has come to rest so far: when it has changed, what
    /// is unfinished now began after the last look.
    pub fn rests(&self) -> u64 {
        self.rests
    }

    /// The current frame's last byte is in.
    fn end_frame(&mut self) {
        if self.ends_message {
            self.in_message = false;
            self.message_bytes = 0;
        }
        self.have = 0;
        self.in_payload = false;
        self.ends_message = false;
        if !self.in_message {
            self.rests += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame: `opcode`, FIN when `fin`, `len` payload bytes.
    fn frame(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    const TEXT: u8 = 1;
    const CONTINUATION: u8 = 0;
    const PING: u8 = 9;

    #[test]
    fn a_whole_message_leaves_nothing_unfinished() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536, 100_000] {
            let mut t = FrameTracker::default();
            t.feed(&frame(TEXT, true, len));
            assert!(!t.unfinished(), "{len} bytes");
            assert_eq!(t.message_bytes(), 0);
        }
    }

    #[test]
    fn a_message_is_unfinished_until_its_last_byte_whatever_the_split() {
        let f = frame(TEXT, true, 70_000);
        for cut in [1, 2, 3, 5, 9, 13, 14, 15, 1_000, f.len() - 1] {
            let mut t = FrameTracker::default();
            t.feed(&f[..cut]);
            assert!(t.unfinished(), "cut at {cut}");
            let stated = if cut >= 14 { 70_000 } else { 0 };
            assert_eq!(t.message_bytes(), stated, "cut at {cut}");
            t.feed(&f[cut..]);
            assert!(!t.unfinished(), "cut at {cut}");
        }
    }

    #[test]
    fn each_rest_is_counted_even_when_the_next_message_has_begun() {
        let mut stream = frame(TEXT, true, 10);
        stream.extend(frame(PING, true, 0));
        let next = frame(TEXT, false, 300);
        stream.extend_from_slice(&next[..20]);
        let mut t = FrameTracker::default();
        t.feed(&stream);
        assert!(t.unfinished());
        assert_eq!(t.rests(), 2, "the message and the ping after it");
        t.feed(&next[20..]);
        assert_eq!(t.rests(), 2, "a fragment does not end its message");
        t.feed(&frame(CONTINUATION, true, 1));
        assert_eq!(t.rests(), 3);
    }

    #[test]
    fn byte_by_byte_tracks_the_same() {
        let mut stream = frame(TEXT, true, 200);
        stream.extend(frame(TEXT, true, 3));
        let mut t = FrameTracker::default();
        for (i, b) in stream.iter().enumerate() {
            t.feed(std::slice::from_ref(b));
            let ended = i == 208 - 1 || i == stream.len() - 1;
            assert_eq!(t.unfinished(), !ended, "after byte {i}");
        }
    }

    #[test]
    fn a_fragmented_message_stays_unfinished_across_its_frames_and_pings() {
        let mut t = FrameTracker::default();
        t.feed(&frame(TEXT, false, 3_000));
        assert!(t.unfinished());
        assert_eq!(t.message_bytes(), 3_000);
        t.feed(&frame(PING, true, 4));
        assert!(t.unfinished(), "a ping between fragments ends nothing");
        t.feed(&frame(CONTINUATION, false, 2_000));
        assert_eq!(t.message_bytes(), 5_000);
        t.feed(&frame(CONTINUATION, true, 1_000));
        assert!(!t.unfinished());
        assert_eq!(t.message_bytes(), 0);
        t.feed(&frame(TEXT, false, 10));
        assert_eq!(t.message_bytes(), 10, "a new message starts from nothing");
    }

    #[test]
    fn control_frames_between_messages_are_not_messages() {
        let mut t = FrameTracker::default();
        let ping = frame(PING, true, 100);
        t.feed(&ping[..50]);
        assert!(t.unfinished(), "half a ping is half a frame");
        assert_eq!(t.message_bytes(), 0);
        t.feed(&ping[50..]);
        assert!(!t.unfinished());
    }

    #[test]
    fn several_messages_in_one_read_end_where_the_last_one_stands() {
        let mut stream = frame(TEXT, true, 10);
        stream.extend(frame(TEXT, true, 20));
        let next = frame(TEXT, true, 9_000);
        stream.extend_from_slice(&next[..100]);
        let mut t = FrameTracker::default();
        t.feed(&stream);
        assert!(t.unfinished());
        assert_eq!(t.message_bytes(), 9_000);
    }

    /// Random streams of whole messages (fragmented or not, pings between
    /// fragments and messages, every header length), fed in random cuts:
    /// after each cut the tracker says unfinished exactly when the cut is
    /// not at a point where a message (and any control frame) has ended.
    #[test]
    fn random_streams_cut_anywhere_agree_with_where_messages_end() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut stream = Vec::new();
            // Offsets at which nothing is unfinished, and where frames end.
            let mut rest_points = vec![0];
            let mut frame_ends = Vec::new();
            for _ in 0..next(6) + 1 {
                let parts = next(3) + 1;
                for p in 0..parts {
                    if next(3) == 0 {
                        stream.extend(frame(PING, true, next(126) as usize));
                        frame_ends.push(stream.len());
                        if p == 0 {
                            // Between messages: nothing unfinished after it.
                            rest_points.push(stream.len());
                        }
                    }
                    let len = [0, 1, 125, 126, 4_097, 65_535, 65_536][next(7) as usize];
                    let opcode = if p == 0 { TEXT } else { CONTINUATION };
                    stream.extend(frame(opcode, p + 1 == parts, len));
                    frame_ends.push(stream.len());
                }
                rest_points.push(stream.len());
                if next(2) == 0 {
                    stream.extend(frame(PING, true, next(126) as usize));
                    frame_ends.push(stream.len());
                    rest_points.push(stream.len());
                }
            }
            let mut t = FrameTracker::default();
            let mut at = 0;
            while at < stream.len() {
                // Half the cuts fall where a frame ends, where only the
                // message (not the frame) can be unfinished.
                let next_end = frame_ends.iter().find(|&&e| e > at).copied();
                let cut = match next_end {
                    Some(end) if next(2) == 0 => end,
                    _ => (at + 1 + next(3_000) as usize).min(stream.len()),
                };
                t.feed(&stream[at..cut]);
                at = cut;
                assert_eq!(
                    t.unfinished(),
                    !rest_points.contains(&at),
                    "at byte {at} of {}",
                    stream.len()
                );
            }
            assert!(!t.unfinished());
        }
    }

    #[test]
    fn unmasked_frames_are_followed_too() {
        let mut t = FrameTracker::default();
        t.feed(&[0x81, 3, b'a', b'b']);
        assert!(t.unfinished());
        t.feed(b"c");
        assert!(!t.unfinished());
    }
}
