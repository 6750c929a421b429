//! Raw PCM read from a byte stream (standard input for `onair encode`) and handed to an
//! encoder input: whole sample frames only, in blocks of at most [`BLOCK`] of audio, with
//! the encoder's bounded queue pacing the reads (a file piped in plays at real-time speed;
//! a live generator is paced by itself).

use std::{io::Read, time::Duration};

use onair_media::pcm::{decode_samples, Pcm};
use thiserror::Error;

use crate::input::{
    encoder::{Message, PcmSender},
    pcm::PcmLayout,
};

/// Audio per block handed to the encoder.
pub const BLOCK: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum StdinError {
    #[error("cannot read the PCM input: {0}")]
    Read(#[from] std::io::Error),
}

/// Reads `input` to its end, then sends `End`. Returns early (Ok) if the encoder stops.
pub fn read_pcm(mut input: impl Read, layout: PcmLayout, tx: &PcmSender) -> Result<(), StdinError> {
    let frame_bytes = layout.format.bytes_per_sample() * usize::from(layout.channels);
    let block_frames = (u64::from(layout.rate) * BLOCK.as_millis() as u64 / 1000).max(1) as usize;
    let mut buf = vec![0u8; block_frames * frame_bytes];
    let mut held = 0usize;
    loop {
        let n = match input.read(&mut buf[held..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        held += n;
        let whole = held / frame_bytes * frame_bytes;
        if whole == 0 {
            continue;
        }
        let mut samples = Vec::with_capacity(whole / layout.format.bytes_per_sample());
        decode_samples(layout.format, &buf[..whole], &mut samples);
        buf.copy_within(whole..held, 0);
        held -= whole;
        if tx
            .send(Message::Pcm(Pcm::new(
                layout.rate,
                layout.channels,
                samples,
            )))
            .is_err()
        {
            return Ok(());
        }
    }
    let _ = tx.send(Message::End);
    Ok(())
}
