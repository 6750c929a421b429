//! An owned libopus encoder (`unsafe-libopus`): creation, the few controls onair uses,
//! float encoding. The native state is freed on drop.

use std::ptr::NonNull;

use unsafe_libopus as unsafe_opus;
use unsafe_libopus::opus_encoder_ctl;

/// A libopus return code below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusCode(pub i32);

impl std::fmt::Display for OpusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            unsafe_opus::OPUS_BAD_ARG => "bad argument",
            unsafe_opus::OPUS_BUFFER_TOO_SMALL => "buffer too small",
            unsafe_opus::OPUS_INTERNAL_ERROR => "internal error",
            unsafe_opus::OPUS_INVALID_PACKET => "invalid packet",
            unsafe_opus::OPUS_UNIMPLEMENTED => "unimplemented",
            unsafe_opus::OPUS_INVALID_STATE => "invalid state",
            unsafe_opus::OPUS_ALLOC_FAIL => "allocation failed",
            _ => "unknown error",
        };
        write!(f, "{name} ({})", self.0)
    }
}

fn check(rc: i32) -> Result<i32, OpusCode> {
    if rc < 0 {
        Err(OpusCode(rc))
    } else {
        Ok(rc)
    }
}

#[derive(Debug)]
pub struct OpusEncoder {
    st: NonNull<unsafe_opus::OpusEncoder>,
    channels: usize,
}

// SAFETY: the encoder state is heap memory reached only through `&mut self`; libopus keeps
// no per-thread state, and its (transpiled `static mut`) globals are constant tables.
unsafe impl Send for OpusEncoder {}

impl OpusEncoder {
    /// An encoder for `rate` (8, 12, 16, 24 or 48 kHz) and 1 or 2 channels, tuned for
    /// general audio (`OPUS_APPLICATION_AUDIO`).
    pub fn new(rate: u32, channels: u16) -> Result<OpusEncoder, OpusCode> {
        let rate = i32::try_from(rate).map_err(|_| OpusCode(unsafe_opus::OPUS_BAD_ARG))?;
        let mut err = 0i32;
        // SAFETY: plain integers in; `err` is a valid out-pointer for the call's duration.
        let st = unsafe {
            unsafe_opus::opus_encoder_create(
                rate,
                i32::from(channels),
                unsafe_opus::OPUS_APPLICATION_AUDIO,
                &mut err,
            )
        };
        check(err)?;
        let st = NonNull::new(st).ok_or(OpusCode(unsafe_opus::OPUS_ALLOC_FAIL))?;
        Ok(OpusEncoder {
            st,
            channels: usize::from(channels),
        })
    }

    fn set(&mut self, request: i32, value: i32) -> Result<(), OpusCode> {
        // SAFETY: `st` is live and exclusively ours; SET requests read one i32 argument.
        check(unsafe { opus_encoder_ctl!(self.st.as_ptr(), request, value) }).map(drop)
    }

    pub fn set_bitrate(&mut self, bps: i32) -> Result<(), OpusCode> {
        self.set(unsafe_opus::OPUS_SET_BITRATE_REQUEST, bps)
    }

    /// `true`: variable bitrate (libopus' default); `false`: hard CBR.
    pub fn set_vbr(&mut self, vbr: bool) -> Result<(), OpusCode> {
        self.set(unsafe_opus::OPUS_SET_VBR_REQUEST, i32::from(vbr))
    }

    /// Samples (at the input rate) the encoder delays its output by; the Ogg pre-skip.
    pub fn lookahead(&mut self) -> Result<u32, OpusCode> {
        let mut v = 0i32;
        // SAFETY: `st` is live and exclusively ours; the GET request writes one i32 to `v`.
        check(unsafe {
            opus_encoder_ctl!(
                self.st.as_ptr(),
                unsafe_opus::OPUS_GET_LOOKAHEAD_REQUEST,
                &mut v
            )
        })?;
        u32::try_from(v).map_err(|_| OpusCode(unsafe_opus::OPUS_INTERNAL_ERROR))
    }

    /// Back to the freshly created state (settings kept), for a new logical stream.
    pub fn reset(&mut self) -> Result<(), OpusCode> {
        // SAFETY: `st` is live and exclusively ours; RESET_STATE takes no argument.
        check(unsafe { opus_encoder_ctl!(self.st.as_ptr(), unsafe_opus::OPUS_RESET_STATE) })
            .map(drop)
    }

    /// Encodes one frame of interleaved samples (`pcm.len() / channels` must be a valid
    /// Opus frame size at the encoder's rate) into `packet`; returns the packet length.
    pub fn encode_float(&mut self, pcm: &[f32], packet: &mut [u8]) -> Result<usize, OpusCode> {
        let bad = OpusCode(unsafe_opus::OPUS_BAD_ARG);
        if self.channels == 0 || pcm.len() % self.channels != 0 {
            return Err(bad);
        }
        let frame = i32::try_from(pcm.len() / self.channels).map_err(|_| bad)?;
        let max = i32::try_from(packet.len()).unwrap_or(i32::MAX);
        // SAFETY: `pcm` holds exactly `frame * channels` readable samples and `packet`
        // `max` writable bytes; `st` is live and exclusively ours.
        let n = check(unsafe {
            unsafe_opus::opus_encode_float(
                self.st.as_ptr(),
                pcm.as_ptr(),
                frame,
                packet.as_mut_ptr(),
                max,
            )
        })?;
        usize::try_from(n).map_err(|_| OpusCode(unsafe_opus::OPUS_INTERNAL_ERROR))
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: created by `opus_encoder_create`, destroyed exactly once.
        unsafe { unsafe_opus::opus_encoder_destroy(self.st.as_ptr()) }
    }
}
