//! The verifier API's wire contract, with no I/O: what verifier, host agent and shim send and
//! answer. The server builds its answers from these types and the clients read them back.

mod error_code;

pub use error_code::ErrorCode;
mod alerts;
mod appraisal;
mod audit;
mod captures;
mod enroll;
mod error;
mod renewal;
mod vms;

pub use alerts::{
    ALERT_JWT_TYP, Alert, AlertDelivery, AlertList, AlertShown, DeliveryState, NewSilence,
    NewWebhook, ScheduleSet, SetSchedule, Silence, SilenceEnded, SilenceList, Webhook, WebhookList,
    verify_alert,
};
pub use appraisal::{
    Appraisal, AppraisalList, AppraisalResult, AppraisedRegion, Finding, KernelAppraisal,
    KernelFinding, RegionChange, Tier, TrustVector,
};
pub use audit::{AuditExport, AuditVerified, CheckpointList, Health, SignedCheckpoint};
pub use captures::{
    CaptureRequest, CaptureRequestMade, CaptureRequests, CaptureState, CaptureStatus,
};
pub use enroll::{
    Activation, CredentialChallenge, Enrolled, EnrollmentAnswer, EnrollmentRequest,
    EnrollmentToken, HardwarePolicy, HostDisabled, HostList, HostSummary, MinTcb,
    NewEnrollmentToken,
};
pub use error::ApiErrorBody;
pub use renewal::{AgentRenewal, PersonRenewal, Renewed};
pub use vms::{
    ActiveBaseline, ActiveBaselineRegion, AllowModules, AssignPolicy, BaselineImported,
    BaselineLeaves, BaselineList, BaselinePromoted, BaselineVersion, ChainHead, ChainReset,
    ModulesAllowed, NewVm, Nonce, PolicyAssigned, PromoteBaseline, ResetChain, SetThreshold,
    ThresholdSet, VmList, VmPolicy, VmRegistered, VmRemoved, VmSummary,
};
