//! LAME settings missing from `mp3lame-encoder`'s safe builder.

use mp3lame_encoder::{ffi, Builder};

/// Sets a CBR bitrate in kbit/s. The builder's `Bitrate` enum lacks some standard values
/// (56, 144), so the setter is called directly. LAME validates the value against the
/// output sample rate in `lame_init_params`; the caller checks it against the table first.
pub fn set_brate(builder: &mut Builder, kbps: u32) -> Result<(), i32> {
    let kbps = i32::try_from(kbps).map_err(|_| -1)?;
    // SAFETY: `as_ptr` returns the builder's live `lame_global_flags`, owned by `builder`
    // (borrowed mutably here) and not yet initialised into an encoder; `lame_set_brate`
    // only stores the integer.
    let rc = unsafe { ffi::lame_set_brate(builder.as_ptr(), kbps) };
    if rc == 0 {
        Ok(())
    } else {
        Err(rc)
    }
}
