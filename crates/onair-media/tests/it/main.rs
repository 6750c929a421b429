//! Integration tests of onair-media against third-party tools (ffmpeg), which must be
//! installed: a missing peer fails the test.

mod g711;
