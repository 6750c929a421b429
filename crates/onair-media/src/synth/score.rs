//! The composer: turns a seed into one piece's score (every note, in sample frames).
//!
//! A piece has a key (major or minor), a tempo, a metre, a four-chord diatonic progression
//! and a form: an intro cycle (pad, then bass), main cycles (pad, bass, a pentatonic melody
//! built from a two-bar rhythmic motif, often an arpeggio), an outro cycle, and a held tonic
//! chord. Melody notes on strong beats are chord tones; no melody note and no added 7th or
//! 9th sits a semitone from a chord tone.
//!
//! Invariants: the score is a pure function of (seed, piece index, rate); a piece lasts
//! 60-120 s including its release tail; notes are sorted by start and bounded in number.

/// Small deterministic generator (SplitMix64): the same seed gives the same music
/// everywhere, without depending on a crate's stream stability.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Pad,
    Bass,
    Lead,
    Arp,
}

/// Colour of the melody instrument, chosen per piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeadTimbre {
    /// Soft electric-piano bell (FM, ratio 1).
    Bell,
    /// Breathy sustained tone with delayed vibrato.
    Flute,
    /// Short plucked tone (FM, ratio 2, fast index decay).
    Pluck,
}

#[derive(Clone, Debug)]
pub(crate) struct Note {
    /// Frames from the piece start.
    pub start: u64,
    /// Frames the key is held (release follows).
    pub gate: u64,
    pub midi: f64,
    pub vel: f32,
    pub part: Part,
    /// 0 = left, 1 = right.
    pub pan: f32,
}

pub(crate) struct Piece {
    pub title: String,
    pub notes: Vec<Note>,
    /// Frames, release tail and the gap before the next piece included.
    pub length: u64,
    pub beat_frames: f64,
    pub lead: LeadTimbre,
}

const MAJOR: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
const MINOR: [u8; 7] = [0, 2, 3, 5, 7, 8, 10];
const MAJOR_PENTA: [u8; 5] = [0, 2, 4, 7, 9];
const MINOR_PENTA: [u8; 5] = [0, 3, 5, 7, 10];
/// Scale degrees (0 = tonic) of four-chord progressions.
const MAJOR_PROGRESSIONS: [[usize; 4]; 7] = [
    [0, 4, 5, 3],
    [0, 5, 3, 4],
    [3, 0, 4, 5],
    [0, 3, 5, 4],
    [5, 3, 0, 4],
    [0, 5, 1, 4],
    [0, 2, 3, 4],
];
const MINOR_PROGRESSIONS: [[usize; 4]; 6] = [
    [0, 5, 2, 6],
    [0, 3, 6, 2],
    [0, 6, 5, 6],
    [0, 5, 3, 4],
    [0, 2, 6, 5],
    [0, 3, 0, 4],
];
const MAJOR_NAMES: [&str; 12] = [
    "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
];
const MINOR_NAMES: [&str; 12] = [
    "C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B",
];
const FORMS_4: [&str; 8] = [
    "Nocturne",
    "Reverie",
    "Serenade",
    "Interlude",
    "Meditation",
    "Aubade",
    "Study",
    "Song",
];
const FORMS_3: [&str; 3] = ["Waltz", "Lullaby", "Ballad"];

/// Melody rhythms in eighth-note slots: (onset, length). One bar each.
const RHYTHMS_4: [&[(u8, u8)]; 7] = [
    &[(0, 2), (2, 2), (4, 3), (7, 1)],
    &[(0, 3), (3, 1), (4, 4)],
    &[(0, 1), (1, 1), (2, 2), (4, 2), (6, 2)],
    &[(0, 4), (4, 2), (6, 2)],
    &[(2, 2), (4, 2), (6, 2)],
    &[(0, 6), (6, 2)],
    &[(0, 2), (3, 1), (4, 2), (6, 2)],
];
const RHYTHMS_3: [&[(u8, u8)]; 5] = [
    &[(0, 2), (2, 2), (4, 2)],
    &[(0, 3), (3, 1), (4, 2)],
    &[(0, 4), (4, 2)],
    &[(0, 6)],
    &[(0, 1), (1, 1), (2, 2), (4, 2)],
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Intro,
    Main,
    Breakdown,
    Outro,
}

/// Whether pitch class `pc` is a semitone away from any of `tones` (the one interval kept
/// out of the music: minor seconds, major sevenths, minor ninths).
fn rubs(pc: u8, tones: &[u8]) -> bool {
    tones.iter().any(|&t| matches!((12 + pc - t) % 12, 1 | 11))
}

/// Composes piece number `index` of the programme seeded by `seed`.
pub(crate) fn compose(seed: u64, index: u64, rate: u32) -> Piece {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    rng.next_u64();
    let minor = rng.chance(0.5);
    let root = rng.below(12) as u8;
    let bpm = rng.range(66.0, 96.0).round();
    let beats: u64 = if rng.chance(0.25) { 3 } else { 4 };
    let form = if beats == 3 {
        *rng.pick(&FORMS_3)
    } else {
        *rng.pick(&FORMS_4)
    };
    let (key, mode) = if minor {
        (MINOR_NAMES[usize::from(root)], "minor")
    } else {
        (MAJOR_NAMES[usize::from(root)], "major")
    };
    let title = format!("onair demo - {form} No. {} in {key} {mode}", index + 1);
    let scale = if minor { MINOR } else { MAJOR };
    let penta = if minor { MINOR_PENTA } else { MAJOR_PENTA };
    let prog = if minor {
        *rng.pick(&MINOR_PROGRESSIONS)
    } else {
        *rng.pick(&MAJOR_PROGRESSIONS)
    };
    let chord_bars: u64 = if bpm < 80.0 && rng.chance(0.5) { 1 } else { 2 };
    let lead = *rng.pick(&[LeadTimbre::Bell, LeadTimbre::Flute, LeadTimbre::Pluck]);
    let has_arp = rng.chance(0.6);

    let beat_secs = 60.0 / bpm;
    let beat_frames = beat_secs * f64::from(rate);
    let cycle_bars = 4 * chord_bars;
    let cycle_secs = (cycle_bars * beats) as f64 * beat_secs;
    // Ending: two bars of tonic, ~3 s of release, 1.5 s of gap.
    let ending_secs = (2 * beats) as f64 * beat_secs + 4.5;
    let target = rng.range(70.0, 110.0);
    // Whole cycles that keep the piece within 60-120 s (the window is wider than the longest
    // cycle, ~29 s, so one always fits), and at least intro + main + outro.
    let min_cycles = ((60.0 - ending_secs) / cycle_secs).ceil().max(3.0) as u64;
    let max_cycles = (((120.0 - ending_secs) / cycle_secs).floor() as u64).max(min_cycles);
    let cycles =
        (((target - ending_secs) / cycle_secs).round() as u64).clamp(min_cycles, max_cycles);

    let mut c = Composer {
        rng,
        notes: Vec::new(),
        beat_frames,
        root,
        scale,
        penta,
        beats,
        pad_centre: 60.0,
        melody_pos: None,
    };
    let motif_a = c.motif();
    let motif_b = c.motif();
    for cycle in 0..cycles {
        let section = if cycle == 0 {
            Section::Intro
        } else if cycle == cycles - 1 {
            Section::Outro
        } else if cycle % 4 == 3 {
            Section::Breakdown
        } else {
            Section::Main
        };
        let motif = if cycle % 2 == 1 { motif_a } else { motif_b };
        for (i, &degree) in prog.iter().enumerate() {
            let chord = c.chord(degree);
            let bar0 = cycle * cycle_bars + i as u64 * chord_bars;
            let beat0 = (bar0 * beats) as f64;
            c.pad(&chord, beat0, (chord_bars * beats) as f64, 1.0);
            if section != Section::Intro || i >= 2 {
                c.bass(chord[0], beat0, chord_bars);
            }
            let arp_here = match section {
                Section::Intro => false,
                Section::Outro => i < 2,
                Section::Main | Section::Breakdown => true,
            };
            if has_arp && arp_here {
                c.arpeggio(&chord, beat0, chord_bars, bpm);
            }
            if matches!(section, Section::Main | Section::Breakdown) {
                let last = i == prog.len() - 1;
                for b in 0..chord_bars {
                    let rhythm = motif[((i as u64 * chord_bars + b) % 2) as usize];
                    let final_bar = last && b == chord_bars - 1;
                    c.melody_bar(&chord, beat0 + (b * beats) as f64, rhythm, final_bar);
                }
            }
        }
    }
    // Ending: tonic chord, low root, the melody settles on the tonic.
    let end_beat = (cycles * cycle_bars * beats) as f64;
    let tonic = c.chord(0);
    c.pad(&tonic, end_beat, (2 * beats) as f64 - 0.5, 0.9);
    c.note(
        Part::Bass,
        f64::from(c.bass_midi(tonic[0])),
        end_beat,
        (beats + 2) as f64,
        0.9,
        0.5,
    );
    c.note(
        Part::Lead,
        c.nearest_lead(tonic[0]),
        end_beat,
        beats as f64,
        0.8,
        0.55,
    );
    let length = ((end_beat + (2 * beats) as f64) * beat_frames + 4.5 * f64::from(rate)) as u64;

    let mut notes = c.notes;
    notes.sort_by_key(|n| n.start);
    Piece {
        title,
        notes,
        length,
        beat_frames,
        lead,
    }
}

struct Composer {
    rng: Rng,
    notes: Vec<Note>,
    beat_frames: f64,
    root: u8,
    scale: [u8; 7],
    penta: [u8; 5],
    beats: u64,
    /// Average pitch of the last pad voicing, for voice leading.
    pad_centre: f64,
    /// Last melody pitch (MIDI).
    melody_pos: Option<f64>,
}

impl Composer {
    /// Pitch classes (relative to C) of the triad on `degree`, root first, plus an added
    /// 7th or 9th when it is in the pentatonic scale.
    fn chord(&mut self, degree: usize) -> Vec<u8> {
        let pc = |step: usize| (self.root + self.scale[(degree + step) % 7]) % 12;
        let mut tones = vec![pc(0), pc(2), pc(4)];
        let in_penta = |p: u8| self.penta.iter().any(|&q| (self.root + q) % 12 == p);
        let colour = if self.rng.chance(0.5) { pc(6) } else { pc(1) };
        if in_penta(colour) && !rubs(colour, &tones) && self.rng.chance(0.7) {
            tones.push(colour);
        }
        tones
    }

    fn note(&mut self, part: Part, midi: f64, beat: f64, beats: f64, vel: f32, pan: f32) {
        self.notes.push(Note {
            start: (beat * self.beat_frames).round() as u64,
            gate: (beats * self.beat_frames).round().max(1.0) as u64,
            midi,
            vel,
            part,
            pan,
        });
    }

    /// Chord tones voiced close to the previous voicing (smooth voice leading), 52..=72.
    fn pad(&mut self, chord: &[u8], beat: f64, beats: f64, vel: f32) {
        let mut voicing: Vec<f64> = chord
            .iter()
            .map(|&pc| {
                let mut m = 48.0 + f64::from(pc);
                while m < self.pad_centre - 6.0 {
                    m += 12.0;
                }
                m.min(72.0)
            })
            .collect();
        voicing.sort_by(f64::total_cmp);
        voicing.dedup();
        let centre = voicing.iter().sum::<f64>() / voicing.len().max(1) as f64;
        // Drift back towards middle C so voicings do not wander off.
        self.pad_centre = 0.7 * centre + 0.3 * 60.0;
        let n = voicing.len() as f32;
        for (k, m) in voicing.into_iter().enumerate() {
            let pan = 0.3 + 0.4 * k as f32 / (n - 1.0).max(1.0);
            self.note(Part::Pad, m, beat, beats, vel, pan);
        }
    }

    fn bass_midi(&self, pc: u8) -> u8 {
        // Octave 2: MIDI 36..=47.
        36 + pc
    }

    fn bass(&mut self, pc: u8, beat0: f64, bars: u64) {
        let root = f64::from(self.bass_midi(pc));
        for b in 0..bars {
            let beat = beat0 + (b * self.beats) as f64;
            let vel = if b == 0 { 1.0 } else { 0.85 };
            self.note(Part::Bass, root, beat, 1.8, vel, 0.5);
            let second = if self.rng.chance(0.6) {
                root + 7.0
            } else {
                root + 12.0
            };
            let at = 2.0;
            let len = if self.beats == 3 { 0.9 } else { 1.6 };
            self.note(Part::Bass, second, beat + at, len, 0.75, 0.5);
        }
    }

    fn arpeggio(&mut self, chord: &[u8], beat0: f64, bars: u64, bpm: f64) {
        let mut tones: Vec<f64> = chord.iter().map(|&pc| 60.0 + f64::from(pc)).collect();
        tones.sort_by(f64::total_cmp);
        tones.push(tones[0] + 12.0);
        let up_down = self.rng.chance(0.5);
        let pattern: Vec<f64> = if up_down {
            let mut p = tones.clone();
            p.extend(
                tones
                    .iter()
                    .rev()
                    .skip(1)
                    .take(tones.len().saturating_sub(2)),
            );
            p
        } else {
            tones
        };
        let step = if bpm < 76.0 { 0.25 } else { 0.5 };
        let steps = ((bars * self.beats) as f64 / step) as usize;
        for s in 0..steps {
            let m = pattern[s % pattern.len()];
            let accent = if s % (1.0 / step) as usize == 0 {
                0.8
            } else {
                0.6
            };
            let pan = if s % 2 == 0 { 0.35 } else { 0.65 };
            self.note(
                Part::Arp,
                m,
                beat0 + s as f64 * step,
                step * 0.9,
                accent,
                pan,
            );
        }
    }

    /// A two-bar rhythmic motif.
    fn motif(&mut self) -> [&'static [(u8, u8)]; 2] {
        if self.beats == 3 {
            [*self.rng.pick(&RHYTHMS_3), *self.rng.pick(&RHYTHMS_3)]
        } else {
            [*self.rng.pick(&RHYTHMS_4), *self.rng.pick(&RHYTHMS_4)]
        }
    }

    /// Pentatonic pitches of the melody range, ascending.
    fn lead_scale(&self) -> Vec<f64> {
        (62u8..=81)
            .filter(|m| self.penta.iter().any(|&q| (self.root + q) % 12 == m % 12))
            .map(f64::from)
            .collect()
    }

    fn nearest_lead(&self, pc: u8) -> f64 {
        let here = self.melody_pos.unwrap_or(70.0);
        self.lead_scale()
            .into_iter()
            .filter(|&m| (m as u8) % 12 == pc)
            .min_by(|a, b| (a - here).abs().total_cmp(&(b - here).abs()))
            .unwrap_or(here)
    }

    fn melody_bar(&mut self, chord: &[u8], beat0: f64, rhythm: &[(u8, u8)], final_bar: bool) {
        let scale = self.lead_scale();
        let centre = scale.len() / 2;
        let mut idx = self
            .melody_pos
            .and_then(|p| scale.iter().position(|&m| m >= p))
            .unwrap_or(centre);
        for (k, &(slot, len)) in rhythm.iter().enumerate() {
            let last = final_bar && k == rhythm.len() - 1;
            let strong = slot == 0 || len >= 3 || last;
            if strong {
                // Nearest chord tone (ties broken at random).
                let mut best: Vec<usize> = Vec::new();
                let mut best_d = usize::MAX;
                for (i, &m) in scale.iter().enumerate() {
                    if chord.contains(&((m as u8) % 12)) {
                        let d = i.abs_diff(idx);
                        if d < best_d {
                            best_d = d;
                            best.clear();
                        }
                        if d == best_d {
                            best.push(i);
                        }
                    }
                }
                if !best.is_empty() {
                    idx = *self.rng.pick(&best);
                }
            } else {
                let pull: i64 = if idx > centre + 3 {
                    -1
                } else if idx + 3 < centre {
                    1
                } else {
                    0
                };
                let step = *self.rng.pick(&[-2i64, -1, -1, 1, 1, 2, 0]) + pull;
                let dir = if step < 0 { -1 } else { 1 };
                let top = scale.len() as i64 - 1;
                let mut at = (idx as i64 + step).clamp(0, top);
                // Passing notes too, never a semitone against the harmony: keep going in
                // the same direction (the pentatonic's next tone is a whole tone or more on).
                for _ in 0..3 {
                    let pc = (scale[at as usize] as u8) % 12;
                    if !rubs(pc, chord) {
                        break;
                    }
                    at = if (0..=top).contains(&(at + dir)) {
                        at + dir
                    } else {
                        at - dir
                    };
                }
                idx = at as usize;
            }
            let beat = beat0 + f64::from(slot) * 0.5;
            let mut beats = f64::from(len) * 0.5 * 0.95;
            if last {
                beats = f64::from(len) * 0.5 + 1.0;
            }
            let vel = if slot == 0 {
                1.0
            } else {
                0.8 + 0.1 * self.rng.unit() as f32
            };
            if let Some(&m) = scale.get(idx) {
                self.note(Part::Lead, m, beat, beats, vel, 0.55);
                self.melody_pos = Some(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_last_between_one_and_two_minutes() {
        for seed in 0..40u64 {
            for index in 0..3 {
                let p = compose(seed, index, 44_100);
                let secs = p.length as f64 / 44_100.0;
                assert!(
                    (60.0..=120.0).contains(&secs),
                    "seed {seed}/{index}: {secs} s, {}",
                    p.title
                );
                assert!(p.notes.windows(2).all(|w| w[0].start <= w[1].start));
                assert!(p.notes.len() < 5000);
                assert!(p.notes.iter().all(|n| n.start + n.gate < p.length));
                assert!(p.title.starts_with("onair demo - "));
            }
        }
    }

    #[test]
    fn no_semitone_rubs_against_the_harmony() {
        for seed in 0..30u64 {
            let p = compose(seed, 1, 22_050);
            let pads: Vec<&Note> = p.notes.iter().filter(|n| n.part == Part::Pad).collect();
            // Pad against pad (the chord itself), lead against the chord held at its start
            // (a chord ending within a few frames of it is the previous chord).
            for n in p
                .notes
                .iter()
                .filter(|n| matches!(n.part, Part::Lead | Part::Pad))
            {
                for c in pads
                    .iter()
                    .filter(|c| c.start <= n.start && n.start + 16 < c.start + c.gate)
                {
                    let d = ((n.midi - c.midi).round() as i64).rem_euclid(12);
                    assert!(
                        d != 1 && d != 11,
                        "{}: {:?} rubs against {:?}",
                        p.title,
                        n,
                        c
                    );
                }
            }
        }
    }

    #[test]
    fn melody_and_chords_stay_in_key() {
        for seed in 0..20u64 {
            let p = compose(seed, 0, 48_000);
            // Recover key and mode from the title, then check every pitch class.
            let words: Vec<&str> = p.title.split_whitespace().collect();
            let (key, mode) = (words[words.len() - 2], words[words.len() - 1]);
            let names = if mode == "minor" {
                MINOR_NAMES
            } else {
                MAJOR_NAMES
            };
            let root = names.iter().position(|&n| n == key).expect("key name") as u8;
            let scale = if mode == "minor" { MINOR } else { MAJOR };
            let penta = if mode == "minor" {
                MINOR_PENTA
            } else {
                MAJOR_PENTA
            };
            for n in &p.notes {
                let pc = ((n.midi as i64 - i64::from(root)).rem_euclid(12)) as u8;
                assert!(scale.contains(&pc), "{}: {:?} out of key", p.title, n);
                if n.part == Part::Lead {
                    assert!(
                        penta.contains(&pc),
                        "{}: lead {:?} off the pentatonic",
                        p.title,
                        n
                    );
                }
            }
        }
    }
}
