#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = onair_proto::icecast::parse_request_head(data, 8192) {
        let _ = head.basic_auth();
        let _ = onair_proto::icecast::StreamInfoHeaders::from_head(&head);
        if let Some(q) = head.query() {
            for (_, v) in onair_proto::icecast::parse_query(q) {
                let _ = onair_proto::icecast::decode_text(&v, Some("latin1"));
            }
        }
    }
});
