//! Alibaba Cloud ID Verification (international, cloudauth-intl `2022-08-09`): `Mobile3MetaVerifyIntl`,
//! `Id2MetaVerifyIntl` and `Id2MetaPeriodVerifyIntl`, signed with ACS3-HMAC-SHA256.

pub mod answer;
pub mod client;
pub mod codes;
pub mod request;
pub mod settings;
pub mod wire;

pub use client::AlibabaProvider;

use crate::check::CheckKind;
use crate::providers::vendor::{SandboxRoute, Vendor};

/// The vendor, as the registry lists it.
pub const VENDOR: Vendor = Vendor {
    name: "alibaba",
    title: "Alibaba Cloud ID Verification (international, cloudauth-intl)",
    apis: &[
        (CheckKind::Mobile3, "Mobile3MetaVerifyIntl"),
        (CheckKind::Id2, "Id2MetaVerifyIntl"),
        (CheckKind::Id2Period, "Id2MetaPeriodVerifyIntl"),
    ],
    build: settings::build,
    code_tables: &[
        ("mobile3 BizCode", codes::MOBILE3_BIZ_CODES),
        ("mobile3 SubCode", codes::MOBILE3_SUB_CODES),
        ("id2 BizCode", codes::ID2_BIZ_CODES),
        ("period SubCode", codes::PERIOD_SUB_CODES),
        ("errors", codes::ERROR_CODES),
    ],
    sandbox_credentials: &[
        ("access_key_id", SANDBOX_ACCESS_KEY_ID),
        ("access_key_secret", SANDBOX_ACCESS_KEY_SECRET),
    ],
    sandbox_route: SandboxRoute {
        path: "/",
        header: Some("x-acs-action"),
    },
};

/// The AccessKeyId `kycq sandbox` accepts by default (documented, local, not a credential).
pub const SANDBOX_ACCESS_KEY_ID: &str = "LTAIkycqsandbox";
/// The AccessKeySecret `kycq sandbox` accepts by default (documented, local, not a credential).
pub const SANDBOX_ACCESS_KEY_SECRET: &str = "kycq-sandbox-alibaba-secret";

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

    /// The `x-acs-action` name (from [`VENDOR`]'s API list).
    pub fn action(self) -> &'static str {
        let check = match self {
            Api::Mobile3 => CheckKind::Mobile3,
            Api::Id2 => CheckKind::Id2,
            Api::Id2Period => CheckKind::Id2Period,
        };
        VENDOR.action(check).expect("Alibaba serves every check")
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
    /// From `providers.alibaba.param_type`: `normal` or `md5` (any case), else None.
    pub fn parse(s: &str) -> Option<ParamType> {
        [ParamType::Normal, ParamType::Md5]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Normal => "normal",
            ParamType::Md5 => "md5",
        }
    }
}
