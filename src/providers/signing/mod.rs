//! Request signing shared by provider clients and the sandbox: pure functions, time and nonces passed in.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub mod acs3;
pub mod tc3;

/// Lower-case hex of the SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Compares two byte strings in time that depends only on their lengths, not their contents
/// (for checking signatures a caller sent).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_one_matches_the_java_sdk_test() {
        // tencentcloud-sdk-java SignTest (SIGNING_VECTORS.md T11).
        assert_eq!(
            sha256_hex(b"1"),
            "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hmac_sha256_matches_the_node_sdk_test() {
        // tencentcloud-sdk-nodejs test/common/sign.test.ts (SIGNING_VECTORS.md T10), base64
        // 6c+oFbRDL8wKcVPPwa4KtGMOzMuJTQDwV+8tMMPf7oM=.
        assert_eq!(
            hex::encode(hmac_sha256(b"test-secret-key", b"test-sign-string")),
            "e9cfa815b4432fcc0a7153cfc1ae0ab4630ecccb894d00f057ef2d30c3dfee83"
        );
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
