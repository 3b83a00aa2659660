//! Stream descriptions (lsl_streaminfo) and stream resolution by predicate.
// Unsafe code is allowed here by `ffi`'s `#![allow(unsafe_code)]`; the invariants are in its
// module documentation, each block's own below.

use std::ffi::{c_int, c_uint};
use std::sync::Arc;

use super::{Api, CF_STRING, Handle, c_string, string_at};

/// A stream description (lsl_streaminfo), owned.
pub struct StreamInfo {
    pub(super) api: Arc<Api>,
    pub(super) handle: Handle,
}

// SAFETY: a streaminfo is a heap object with no thread affinity; this wrapper is not Sync, so it
// is used from one thread at a time.
unsafe impl Send for StreamInfo {}

impl Drop for StreamInfo {
    fn drop(&mut self) {
        // SAFETY: `handle` came from liblsl and is destroyed exactly once, here.
        unsafe { (self.api.lsl_destroy_streaminfo)(self.handle) }
    }
}

impl StreamInfo {
    /// A new description: `format` is CF_FLOAT32 or CF_STRING; rate 0 = irregular.
    pub fn new(api: &Arc<Api>, name: &str, kind: &str, channels: usize, rate: f64, format: c_int, source_id: &str) -> Self {
        let (name, kind, source) = (c_string(name), c_string(kind), c_string(source_id));
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let handle = unsafe { (api.lsl_create_streaminfo)(name.as_ptr(), kind.as_ptr(), channels as c_int, rate, format, source.as_ptr()) };
        Self { api: api.clone(), handle }
    }

    pub fn name(&self) -> String {
        // SAFETY: valid handle (owned); the string is copied before any other call.
        unsafe { string_at((self.api.lsl_get_name)(self.handle)) }
    }
    pub fn kind(&self) -> String {
        // SAFETY: as above.
        unsafe { string_at((self.api.lsl_get_type)(self.handle)) }
    }
    pub fn source_id(&self) -> String {
        // SAFETY: as above.
        unsafe { string_at((self.api.lsl_get_source_id)(self.handle)) }
    }
    pub fn hostname(&self) -> String {
        // SAFETY: as above.
        unsafe { string_at((self.api.lsl_get_hostname)(self.handle)) }
    }
    pub fn channel_count(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { (self.api.lsl_get_channel_count)(self.handle) }.max(0) as usize
    }
    pub fn nominal_rate(&self) -> f64 {
        // SAFETY: valid handle.
        unsafe { (self.api.lsl_get_nominal_srate)(self.handle) }
    }
    pub fn is_string(&self) -> bool {
        // SAFETY: valid handle.
        unsafe { (self.api.lsl_get_channel_format)(self.handle) == CF_STRING }
    }

    /// Channel labels from the XDF-style description (desc/channels/channel/label), if present.
    pub fn channel_labels(&self) -> Vec<String> {
        let (channels_tag, label_tag) = (c_string("channels"), c_string("label"));
        let mut labels = Vec::new();
        // SAFETY: desc/child/sibling handles are owned by the streaminfo, which outlives this
        // loop; lsl_empty marks the end of a list; strings are copied at once.
        unsafe {
            let desc = (self.api.lsl_get_desc)(self.handle);
            let channels = (self.api.lsl_child)(desc, channels_tag.as_ptr());
            let mut channel = (self.api.lsl_first_child)(channels);
            while (self.api.lsl_empty)(channel) == 0 {
                labels.push(string_at((self.api.lsl_child_value_n)(channel, label_tag.as_ptr())));
                channel = (self.api.lsl_next_sibling)(channel);
            }
        }
        labels
    }

    /// Appends `<parent><child>value</child>...</parent>` under desc; `children` are leaf pairs.
    pub fn append_desc(&mut self, parent: &str, children: &[(&str, &str)]) {
        let parent = c_string(parent);
        // SAFETY: desc and the appended element belong to this streaminfo; strings outlive the calls.
        unsafe {
            let desc = (self.api.lsl_get_desc)(self.handle);
            let element = (self.api.lsl_append_child)(desc, parent.as_ptr());
            for (name, value) in children {
                let (name, value) = (c_string(name), c_string(value));
                (self.api.lsl_append_child_value)(element, name.as_ptr(), value.as_ptr());
            }
        }
    }

    /// Appends desc/channels/channel elements with label, unit and type.
    pub fn append_channels(&mut self, channels: &[(&str, &str, &str)]) {
        let tags = [c_string("channels"), c_string("channel"), c_string("label"), c_string("unit"), c_string("type")];
        // SAFETY: as in append_desc.
        unsafe {
            let desc = (self.api.lsl_get_desc)(self.handle);
            let list = (self.api.lsl_append_child)(desc, tags[0].as_ptr());
            for (label, unit, kind) in channels {
                let channel = (self.api.lsl_append_child)(list, tags[1].as_ptr());
                let (label, unit, kind) = (c_string(label), c_string(unit), c_string(kind));
                (self.api.lsl_append_child_value)(channel, tags[2].as_ptr(), label.as_ptr());
                (self.api.lsl_append_child_value)(channel, tags[3].as_ptr(), unit.as_ptr());
                (self.api.lsl_append_child_value)(channel, tags[4].as_ptr(), kind.as_ptr());
            }
        }
    }
}

/// Streams matching an LSL predicate (XPath 1.0, e.g. `name='EEG' and type='EEG'`), waiting up
/// to `timeout` seconds for at least one.
pub fn resolve(api: &Arc<Api>, predicate: &str, timeout: f64) -> Vec<StreamInfo> {
    let predicate = c_string(predicate);
    let mut buffer: [Handle; 64] = [std::ptr::null_mut(); 64];
    // SAFETY: buffer has room for 64 handles; liblsl writes at most that many and returns the
    // count (or a negative error); each returned handle is owned by us from now on.
    let found = unsafe { (api.lsl_resolve_bypred)(buffer.as_mut_ptr(), buffer.len() as c_uint, predicate.as_ptr(), 1, timeout) };
    buffer.iter().take(found.max(0) as usize).map(|&handle| StreamInfo { api: api.clone(), handle }).collect()
}
