//! The built-in demo programme: endless, procedurally composed music for a station that has
//! nothing else to play (`onair serve` with no config plays it on /stream).
//!
//! Owns: [`Programme`], which renders pieces of 60-120 s one after another, each with its
//! own key, tempo, metre, instrumentation and title ("onair demo - Nocturne No. 3 in A
//! minor"). A piece is a soft pad on a diatonic chord progression, a bass line, a
//! pentatonic melody and often an arpeggio, in a little echo and reverb; it ends on a held
//! tonic chord and a short silence before the next begins.
//!
//! Invariants:
//! - Deterministic: the samples are a pure function of (rate, channels, seed), whatever
//!   block sizes the caller asks for (rendering runs in fixed internal chunks).
//! - Peaks stay under -1 dBFS: the mix goes through the true-peak [`Limiter`] with a
//!   -1.5 dBTP ceiling (it rarely has work: the mix is set for about -20 LUFS).
//! - Bounded: at most [`MAX_VOICES`] notes sound at once, effect buffers are fixed, a
//!   piece's score is at most a few thousand notes.
//! - A piece starts on an exact frame, reported once by [`Programme::next_block`].

mod score;
mod space;
mod voice;

use std::collections::VecDeque;

use crate::loudness::Limiter;
use crate::pcm::Pcm;
use score::{compose, Part, Piece, Rng};
use space::{PingPong, Reverb};
use voice::{Tables, Voice};

/// Notes sounding at once; beyond it the quietest voice is dropped.
pub const MAX_VOICES: usize = 64;
/// Internal render chunk (frames).
const CHUNK: usize = 256;
/// Ceiling of the final limiter.
const CEILING_DBTP: f64 = -1.5;
/// Rates outside this range are clamped (the music needs at least 8 kHz to make sense).
const RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;

pub struct Programme {
    rate: u32,
    channels: u16,
    seed: u64,
    tables: Tables,
    piece: Piece,
    piece_index: u64,
    /// Frames of the current piece rendered so far.
    piece_pos: u64,
    next_note: usize,
    voices: Vec<Voice>,
    echo: PingPong,
    reverb: Reverb,
    limiter: Limiter,
    /// Limited stereo frames not yet handed out.
    fifo: VecDeque<f32>,
    /// Frames rendered (= limiter input) and handed out, since the start.
    rendered: u64,
    emitted: u64,
    /// Piece starts (output frame, title) not yet reported.
    starts: VecDeque<(u64, String)>,
    title: String,
    /// Scratch buffers for one chunk.
    dry: [Vec<f32>; 2],
    echo_send: [Vec<f32>; 2],
    verb_send: [Vec<f32>; 2],
    mixed: Vec<f32>,
    limited: Vec<f32>,
}

impl std::fmt::Debug for Programme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Programme")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("seed", &self.seed)
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}

impl Programme {
    /// `rate` is clamped to 8-192 kHz. With more than two channels the music is on the first
    /// two and the others are silent; with one it is the stereo mix folded down.
    pub fn new(rate: u32, channels: u16, seed: u64) -> Programme {
        let rate = rate.clamp(*RATES.start(), *RATES.end());
        let piece = compose(seed, 0, rate);
        let title = piece.title.clone();
        let echo = PingPong::new(rate, 0.75 * piece.beat_frames / f64::from(rate), 0.35);
        let mut starts = VecDeque::new();
        starts.push_back((0, title.clone()));
        Programme {
            rate,
            channels,
            seed,
            tables: Tables::new(),
            piece,
            piece_index: 0,
            piece_pos: 0,
            next_note: 0,
            voices: Vec::with_capacity(MAX_VOICES),
            echo,
            reverb: Reverb::new(rate, 2.4),
            limiter: Limiter::new(rate, 2, 0.0, CEILING_DBTP),
            fifo: VecDeque::new(),
            rendered: 0,
            emitted: 0,
            starts,
            title,
            dry: [vec![0.0; CHUNK], vec![0.0; CHUNK]],
            echo_send: [vec![0.0; CHUNK], vec![0.0; CHUNK]],
            verb_send: [vec![0.0; CHUNK], vec![0.0; CHUNK]],
            mixed: Vec::with_capacity(2 * CHUNK),
            limited: Vec::with_capacity(2 * CHUNK),
        }
    }

    /// Title of the piece playing at the end of the last block handed out (before the first
    /// block: the first piece).
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The effective sample rate (after clamping).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Next `frames` sample frames. Returns the PCM and, if a new piece starts inside this
    /// block, the frame offset within the block where it starts and its title (the last one,
    /// should a huge block span several starts). The first call reports offset 0.
    pub fn next_block(&mut self, frames: usize) -> (Pcm, Option<(usize, String)>) {
        while self.fifo.len() < 2 * frames {
            self.render_chunk();
        }
        let channels = usize::from(self.channels);
        let mut samples = Vec::with_capacity(frames * channels);
        for _ in 0..frames {
            // invariant: the loop above filled at least `frames` stereo frames.
            let l = self.fifo.pop_front().unwrap_or(0.0);
            let r = self.fifo.pop_front().unwrap_or(0.0);
            match channels {
                0 => {}
                1 => samples.push(0.5 * (l + r)),
                _ => {
                    samples.push(l);
                    samples.push(r);
                    samples.extend(std::iter::repeat_n(0.0, channels - 2));
                }
            }
        }
        let end = self.emitted + frames as u64;
        let mut started = None;
        while let Some((at, _)) = self.starts.front() {
            if *at >= end {
                break;
            }
            if let Some((at, title)) = self.starts.pop_front() {
                started = Some(((at - self.emitted) as usize, title.clone()));
                self.title = title;
            }
        }
        self.emitted = end;
        (Pcm::new(self.rate, self.channels, samples), started)
    }

    /// Renders one chunk (never crossing a piece boundary) into the FIFO.
    fn render_chunk(&mut self) {
        if self.piece_pos >= self.piece.length {
            self.piece_index += 1;
            self.piece = compose(self.seed, self.piece_index, self.rate);
            self.piece_pos = 0;
            self.next_note = 0;
            self.echo = PingPong::new(
                self.rate,
                0.75 * self.piece.beat_frames / f64::from(self.rate),
                0.35,
            );
            self.starts
                .push_back((self.rendered, self.piece.title.clone()));
        }
        let n = (CHUNK as u64).min(self.piece.length - self.piece_pos) as usize;
        let chunk_end = self.piece_pos + n as u64;
        // Start the notes that begin in this chunk.
        let mut rng = Rng::new(self.seed ^ self.rendered);
        while let Some(note) = self.piece.notes.get(self.next_note) {
            if note.start >= chunk_end {
                break;
            }
            let offset = note.start.saturating_sub(self.piece_pos);
            // The pad doubles each note with a detuned twin for width.
            let layers: &[(f64, f32)] = if note.part == Part::Pad {
                &[(-4.0, -0.2), (4.0, 0.2)]
            } else {
                &[(0.0, 0.0)]
            };
            for &(cents, spread) in layers {
                let drift = rng.range(-1.0, 1.0);
                let pan = (note.pan + spread).clamp(0.0, 1.0);
                if let Some(v) =
                    Voice::new(note, self.piece.lead, offset, self.rate, cents + drift, pan)
                {
                    if self.voices.len() >= MAX_VOICES {
                        // Drop the quietest (in practice a voice deep in its release).
                        if let Some(q) = (0..self.voices.len()).min_by(|&a, &b| {
                            self.voices[a].level().total_cmp(&self.voices[b].level())
                        }) {
                            self.voices.swap_remove(q);
                        }
                    }
                    self.voices.push(v);
                }
            }
            self.next_note += 1;
        }

        let (dry, echo_send, verb_send) = (&mut self.dry, &mut self.echo_send, &mut self.verb_send);
        for buf in dry
            .iter_mut()
            .chain(echo_send.iter_mut())
            .chain(verb_send.iter_mut())
        {
            buf[..n].fill(0.0);
        }
        let mut scratch = [vec![0.0f32; n], vec![0.0f32; n]];
        for v in &mut self.voices {
            scratch[0].fill(0.0);
            scratch[1].fill(0.0);
            let [sl, sr] = &mut scratch;
            v.render(&self.tables, sl, sr);
            let s = v.sends;
            for i in 0..n {
                let (l, r) = (scratch[0][i], scratch[1][i]);
                dry[0][i] += l;
                dry[1][i] += r;
                echo_send[0][i] += (l + r) * s.delay;
                verb_send[0][i] += l * s.reverb;
                verb_send[1][i] += r * s.reverb;
            }
        }
        self.voices.retain(|v| !v.done());

        self.mixed.clear();
        for i in 0..n {
            let (el, er) = self.echo.process(echo_send[0][i]);
            let (rl, rr) = self
                .reverb
                .process(verb_send[0][i] + 0.3 * el, verb_send[1][i] + 0.3 * er);
            self.mixed.push(dry[0][i] + 0.45 * el + 0.9 * rl);
            self.mixed.push(dry[1][i] + 0.45 * er + 0.9 * rr);
        }
        self.limited.clear();
        self.limiter.process(&self.mixed, &mut self.limited);
        self.fifo.extend(self.limited.iter().copied());
        self.piece_pos = chunk_end;
        self.rendered += n as u64;
    }
}
