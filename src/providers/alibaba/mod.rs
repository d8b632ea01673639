//! Alibaba Cloud ID Verification (international, cloudauth-intl `2022-08-09`): `Mobile3MetaVerifyIntl`,
//! `Id2MetaVerifyIntl` and `Id2MetaPeriodVerifyIntl`, signed with ACS3-HMAC-SHA256.

pub mod client;
pub mod codes;
pub mod wire;

pub use client::AlibabaProvider;

use crate::check::CheckKind;

/// API version of every action.
pub const VERSION: &str = "2022-08-09";

/// `DocType` of a second-generation mainland resident ID card (the only one accepted).
pub const DOC_TYPE_RESIDENT_ID: &str = "00000001";

/// How a long-term card's `ValidityEndDate` is sent (the zh/tc vendor pages: `长期`).
pub const LONG_TERM: &str = "长期";

/// The three vendor APIs kycq calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// `Mobile3MetaVerifyIntl` (`MOBILE_3META`): check `mobile3`.
    Mobile3,
    /// `Id2MetaVerifyIntl` (`ID_2META`): check `id2`.
    Id2,
    /// `Id2MetaPeriodVerifyIntl` (`eKYC_Date_MIN`): check `id2_period`.
    Id2Period,
}

impl Api {
    /// Every API.
    pub const ALL: [Api; 3] = [Api::Mobile3, Api::Id2, Api::Id2Period];

    /// The API that runs a check.
    pub fn for_check(check: CheckKind) -> Api {
        match check {
            CheckKind::Mobile3 => Api::Mobile3,
            CheckKind::Id2 => Api::Id2,
            CheckKind::Id2Period => Api::Id2Period,
        }
    }

    /// The `x-acs-action` name.
    pub fn action(self) -> &'static str {
        match self {
            Api::Mobile3 => "Mobile3MetaVerifyIntl",
            Api::Id2 => "Id2MetaVerifyIntl",
            Api::Id2Period => "Id2MetaPeriodVerifyIntl",
        }
    }

    /// The API from its `x-acs-action` name.
    pub fn from_action(action: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.action() == action)
    }

    /// The fixed `ProductCode` parameter.
    pub fn product_code(self) -> &'static str {
        match self {
            Api::Mobile3 => "MOBILE_3META",
            Api::Id2 => "ID_2META",
            Api::Id2Period => "eKYC_Date_MIN",
        }
    }
}

/// `ParamType` of `Mobile3MetaVerifyIntl` (`Id2MetaVerifyIntl` takes `normal` only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// Plaintext.
    Normal,
    /// Each of IdentifyNum, UserName, Mobile as a 32-character lower-case MD5 hex string.
    Md5,
}

impl ParamType {
    /// From `providers.alibaba.param_type` (validated at load: `normal` or `md5`).
    pub fn from_setting(s: &str) -> ParamType {
        if s.eq_ignore_ascii_case("md5") {
            ParamType::Md5
        } else {
            ParamType::Normal
        }
    }

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Normal => "normal",
            ParamType::Md5 => "md5",
        }
    }
}
