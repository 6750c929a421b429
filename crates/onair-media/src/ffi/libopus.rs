//! Safe handles over `unsafe-libopus` (libopus 1.3 transpiled to Rust, so no C toolchain).
//!
//! Invariants: a handle is created by libopus' own `*_create`, used only through `&mut
//! self`, and destroyed exactly once in `Drop`; every pointer passed is to a live slice
//! whose length covers what libopus may write (`frame_size * channels` samples).

use std::ptr::NonNull;

pub(crate) use unsafe_libopus::{OPUS_BAD_ARG, OPUS_BUFFER_TOO_SMALL, OPUS_INVALID_PACKET};

/// Message libopus gives for an error code.
pub(crate) fn error_string(code: i32) -> &'static str {
    unsafe_libopus::opus_strerror(code)
}

/// Samples per channel in `packet` at `rate`, or a negative libopus error code.
pub(crate) fn packet_samples(packet: &[u8], rate: i32) -> i32 {
    let Ok(len) = i32::try_from(packet.len()) else {
        return OPUS_INVALID_PACKET;
    };
    if len == 0 {
        return OPUS_INVALID_PACKET;
    }
    // SAFETY: reads at most `len` bytes of `packet`.
    unsafe { unsafe_libopus::opus_packet_get_nb_samples(packet.as_ptr(), len, rate) }
}

pub(crate) struct Decoder {
    st: NonNull<unsafe_libopus::OpusDecoder>,
    channels: usize,
}

// SAFETY: the decoder state is plain memory owned by this handle alone; libopus keeps no
// thread-local or global references to it.
unsafe impl Send for Decoder {}

impl Decoder {
    /// `rate` and `channels` are validated by libopus (error code on failure).
    pub(crate) fn new(rate: i32, channels: i32) -> Result<Decoder, i32> {
        let mut err = 0;
        // SAFETY: `err` is a valid out pointer for the call.
        let st = unsafe { unsafe_libopus::opus_decoder_create(rate, channels, &mut err) };
        match NonNull::new(st) {
            Some(st) if err == unsafe_libopus::OPUS_OK => Ok(Decoder {
                st,
                // opus_decoder_create accepts only 1 or 2.
                channels: channels as usize,
            }),
            Some(st) => {
                // SAFETY: created above, not yet shared.
                unsafe { unsafe_libopus::opus_decoder_destroy(st.as_ptr()) };
                Err(err)
            }
            None => Err(if err == unsafe_libopus::OPUS_OK {
                unsafe_libopus::OPUS_ALLOC_FAIL
            } else {
                err
            }),
        }
    }

    /// Decodes `packet` (`None` = lost: concealment) into `pcm`, at most `frame_size`
    /// frames; with `fec`, decodes the previous packet's redundancy carried in `packet`.
    /// Returns the frames written or a negative libopus error code.
    pub(crate) fn decode_float(
        &mut self,
        packet: Option<&[u8]>,
        pcm: &mut [f32],
        frame_size: usize,
        fec: bool,
    ) -> i32 {
        if pcm.len() < frame_size * self.channels {
            return OPUS_BUFFER_TOO_SMALL;
        }
        let Ok(frame_size) = i32::try_from(frame_size) else {
            return OPUS_BAD_ARG;
        };
        let (data, len) = match packet {
            Some(p) => match i32::try_from(p.len()) {
                Ok(len) => (p.as_ptr(), len),
                Err(_) => return OPUS_INVALID_PACKET,
            },
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `data` is null or points at `len` readable bytes; `pcm` holds at least
        // `frame_size * channels` samples, the most libopus writes.
        unsafe {
            unsafe_libopus::opus_decode_float(
                self.st.as_ptr(),
                data,
                len,
                pcm.as_mut_ptr(),
                frame_size,
                i32::from(fec),
            )
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed once.
        unsafe { unsafe_libopus::opus_decoder_destroy(self.st.as_ptr()) }
    }
}

/// Encoder, for tests that need real packets (with FEC, loss, any frame size).
#[cfg(test)]
pub(crate) struct Encoder {
    st: NonNull<unsafe_libopus::OpusEncoder>,
    channels: usize,
}

#[cfg(test)]
pub(crate) use unsafe_libopus::{
    OPUS_APPLICATION_AUDIO, OPUS_APPLICATION_VOIP, OPUS_SET_BITRATE_REQUEST,
    OPUS_SET_INBAND_FEC_REQUEST, OPUS_SET_PACKET_LOSS_PERC_REQUEST,
};

#[cfg(test)]
impl Encoder {
    pub(crate) fn new(rate: i32, channels: i32, application: i32) -> Result<Encoder, i32> {
        let mut err = 0;
        // SAFETY: `err` is a valid out pointer for the call.
        let st =
            unsafe { unsafe_libopus::opus_encoder_create(rate, channels, application, &mut err) };
        match NonNull::new(st) {
            Some(st) if err == unsafe_libopus::OPUS_OK => Ok(Encoder {
                st,
                channels: channels as usize,
            }),
            Some(st) => {
                // SAFETY: created above, not yet shared.
                unsafe { unsafe_libopus::opus_encoder_destroy(st.as_ptr()) };
                Err(err)
            }
            None => Err(err),
        }
    }

    /// An `OPUS_SET_*` request taking one integer.
    pub(crate) fn set(&mut self, request: i32, value: i32) -> i32 {
        // SAFETY: SET requests read one i32 argument.
        unsafe {
            unsafe_libopus::opus_encoder_ctl_impl(
                self.st.as_ptr(),
                request,
                unsafe_libopus::varargs!(value),
            )
        }
    }

    /// Encodes one frame (`pcm.len() / channels` frames) into a packet.
    pub(crate) fn encode_float(&mut self, pcm: &[f32]) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; 4000];
        let frames = i32::try_from(pcm.len() / self.channels).map_err(|_| OPUS_BAD_ARG)?;
        // SAFETY: `pcm` holds `frames * channels` samples; `buf` is 4000 writable bytes.
        let n = unsafe {
            unsafe_libopus::opus_encode_float(
                self.st.as_ptr(),
                pcm.as_ptr(),
                frames,
                buf.as_mut_ptr(),
                4000,
            )
        };
        if n < 0 {
            return Err(n);
        }
        buf.truncate(n as usize);
        Ok(buf)
    }
}

#[cfg(test)]
impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { unsafe_libopus::opus_encoder_destroy(self.st.as_ptr()) }
    }
}
