"""AWS at the edge: sessions, one-line errors, and the S3, ECR, IAM and bucket helpers every AWS command shares.

Credentials, region and endpoint come from the usual AWS configuration (profiles, `AWS_*` variables,
`AWS_ENDPOINT_URL`). Every client retries throttling with botocore's standard (or `AWS_RETRY_MODE`) backoff.
The SageMaker SDK is imported lazily (it costs seconds) and its telemetry is off unless the user's SDK
config turns it on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from rlrunner.contract.errors import InfrastructureError

if TYPE_CHECKING:
    import boto3

DEFAULT_MAX_ATTEMPTS = 8
TELEMETRY_CONFIG_PATH = ("SageMaker", "PythonSDK", "Modules", "TelemetryOptOut")
DEFAULT_BUCKET_CONFIG_PATH = ("SageMaker", "PythonSDK", "Modules", "Session", "DefaultS3Bucket")
INSTALL_HINT = "install the SageMaker extra: pip install 'rlrunner[sagemaker]'"
THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException", "TooManyRequestsException",
     "ProvisionedThroughputExceededException", "TransactionInProgressException", "RequestLimitExceeded",
     "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
     "EC2ThrottledException"}
)


class AwsError(InfrastructureError):
    """An AWS failure as one line, where first then what; the CLI exits 4 (infrastructure)."""


def import_boto3() -> Any:
    """boto3, or an AwsError with the install hint."""
    try:
        import boto3
    except ImportError:
        raise AwsError(f"boto3 is not installed: {INSTALL_HINT}") from None
    return boto3


def import_sagemaker() -> Any:
    """The SageMaker SDK v2, imported quietly (no v2 deprecation banner, no config-file INFO lines)."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    if not logging.root.handlers:  # the SDK calls logging.basicConfig(level=INFO) on import; keep a CLI quiet
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    config_logger = logging.getLogger("sagemaker.config")
    if config_logger.level == logging.NOTSET:
        config_logger.setLevel(logging.WARNING)
    try:
        import sagemaker
        import sagemaker.rl
    except ImportError:
        raise AwsError(f"the SageMaker SDK is not installed: {INSTALL_HINT}") from None
    _validate_config_once(sagemaker)
    return sagemaker


def _validate_config_once(sagemaker: Any) -> None:
    """Make the SDK validate a given config once, not on every lookup.

    SDK v2 re-runs `jsonschema.validate` (including a check of its own large schema) each time it reads
    a config value: about 20 times per CreateTrainingJob, 97 % of a submission's time (cProfile). The
    config does not change within a process, so the first verdict for the same content stands.
    """
    import json

    import sagemaker.session
    import sagemaker.utils

    original = sagemaker.utils.validate_sagemaker_config
    if getattr(original, "rlrunner_cached", False):
        return
    valid: set[str] = set()

    def validate(sagemaker_config: Any = None) -> None:
        key = json.dumps(sagemaker_config, sort_keys=True, default=str)
        if key not in valid:
            original(sagemaker_config)
            valid.add(key)

    validate.rlrunner_cached = True  # type: ignore[attr-defined]
    for module in (sagemaker.utils, sagemaker.session):
        if getattr(module, "validate_sagemaker_config", None) is original:
            module.validate_sagemaker_config = validate


def retry_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """botocore retry settings: `AWS_RETRY_MODE`/`AWS_MAX_ATTEMPTS` if set, else standard mode, 8 attempts in all."""
    mode = environ.get("AWS_RETRY_MODE", "standard")
    try:
        attempts = int(environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    except ValueError:
        attempts = DEFAULT_MAX_ATTEMPTS
    return {"mode": mode, "total_max_attempts": max(1, attempts)}  # like AWS_MAX_ATTEMPTS: the first try included


def telemetry_config(user_config: Mapping[str, Any]) -> dict[str, Any]:
    """The SDK config with TelemetryOptOut set, unless the user's own config already decides it."""
    config: dict[str, Any] = dict(user_config) if user_config else {"SchemaVersion": "1.0"}
    node: dict[str, Any] = config
    for key in TELEMETRY_CONFIG_PATH[:-1]:
        node[key] = dict(node.get(key) or {})
        node = node[key]
    node.setdefault(TELEMETRY_CONFIG_PATH[-1], True)
    return config


def config_value(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """A value in the nested SDK config, or None."""
    node: Any = config
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


@dataclass
class AwsContext:
    """A boto3 session with its region and cached clients; the SageMaker session is made on first use."""

    boto: boto3.Session
    region: str
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """A cached client for `service` (endpoint from the usual AWS config, e.g. `AWS_ENDPOINT_URL`)."""
        if service not in self._clients:
            self._clients[service] = self.boto.client(service, region_name=self.region)
        return self._clients[service]

    @cached_property
    def caller_arn(self) -> str:
        """The ARN of the calling identity (STS GetCallerIdentity)."""
        with aws_errors("STS GetCallerIdentity"):
            return str(self.client("sts").get_caller_identity()["Arn"])

    @property
    def account_id(self) -> str:
        """The account id of the calling identity."""
        return self.caller_arn.split(":")[4]

    @cached_property
    def sdk_config(self) -> dict[str, Any]:
        """The SageMaker SDK's defaults config (the user's files), with telemetry off unless they turn it on."""
        import_sagemaker()
        from sagemaker.config.config import load_sagemaker_config

        try:
            user_config = load_sagemaker_config()
        except Exception as error:  # a malformed user config file: name it, do not guess
            raise AwsError(f"SageMaker SDK config: {error}") from None
        return telemetry_config(user_config or {})

    def sagemaker_session(self, default_bucket: str) -> Any:
        """A `sagemaker.Session` on this boto session; the bucket is passed so the SDK never guesses it."""
        sagemaker = import_sagemaker()
        return sagemaker.Session(
            boto_session=self.boto,
            sagemaker_client=self.client("sagemaker"),
            default_bucket=default_bucket,
            sagemaker_config=self.sdk_config,
        )


def connect(*, profile: str | None = None, region: str | None = None, environ: Mapping[str, str] | None = None) -> AwsContext:
    """A session from the usual AWS config, with retries; AwsError when there are no credentials or no region."""
    boto3 = import_boto3()
    import botocore.config
    import botocore.session

    environ = os.environ if environ is None else environ
    core = botocore.session.Session(profile=profile) if profile else botocore.session.Session()
    core.set_default_client_config(botocore.config.Config(retries=retry_config(environ)))
    try:
        session = boto3.Session(botocore_session=core, region_name=region)
    except Exception as error:  # ProfileNotFound and friends
        raise AwsError(f"AWS config: {error}") from None
    if session.get_credentials() is None:
        raise AwsError(
            "AWS credentials: none found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or run `aws configure`)"
        )
    if not session.region_name:
        raise AwsError("AWS region: not set (set AWS_REGION or AWS_DEFAULT_REGION, or a region in your AWS profile)")
    return AwsContext(boto=session, region=session.region_name)


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def describe_error(error: BaseException) -> str:
    """A one-line explanation of a botocore/boto3 failure."""
    from botocore import exceptions

    code = error_code(error)
    if isinstance(error, exceptions.ClientError):
        message = str(error.response.get("Error", {}).get("Message", "")).splitlines()[0:1]
        text = f"{code}: {message[0]}" if message and message[0] else code
        attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        if code in THROTTLING_CODES:
            return f"throttled by AWS ({text}) after {attempts + 1} attempts; try again later or raise AWS_MAX_ATTEMPTS"
        return text
    if isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
        return f"AWS credentials: {error}"
    if isinstance(error, exceptions.EndpointConnectionError):
        return f"cannot reach AWS: {error}"
    if isinstance(error, exceptions.NoRegionError):
        return "AWS region: not set (set AWS_REGION or AWS_DEFAULT_REGION)"
    return f"{type(error).__name__}: {error}"


@contextmanager
def aws_errors(where: str) -> Iterator[None]:
    """Turn botocore failures inside the block into `AwsError("<where>: <what>")`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise AwsError(f"{where}: {describe_error(error)}") from error


# --- S3 URIs, ECR images, roles, buckets ------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` as (bucket, key)."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not match:
        raise ValueError(f"not an S3 URI: {uri!r}")
    return match.group(1), match.group(2)


def ecr_domain(region: str) -> str:
    """The DNS suffix of ECR registries in `region`."""
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def expand_image(image: str, account: str, region: str) -> str:
    """A bare `name:tag` becomes `<account>.dkr.ecr.<region>.amazonaws.com/name:tag`; a full URI is kept."""
    if "/" in image:
        return image
    return f"{account}.dkr.ecr.{region}.{ecr_domain(region)}/{image}"


def role_from_identity(arn: str) -> str | None:
    """The IAM role behind an STS identity ARN (an assumed role), or None for users and root."""
    match = re.fullmatch(r"arn:(aws[a-z\-]*):sts::(\d{12}):assumed-role/([^/]+)/.+", arn)
    if match:
        return f"arn:{match.group(1)}:iam::{match.group(2)}:role/{match.group(3)}"
    if re.fullmatch(r"arn:aws[a-z\-]*:iam::\d{12}:role/.+", arn):
        return arn
    return None


def default_bucket_name(region: str, account: str) -> str:
    """The SDK's default bucket name: `sagemaker-<region>-<account>`."""
    return f"sagemaker-{region}-{account}"


def resolve_role(ctx: AwsContext, planned: str | None) -> str:
    """The planned role (compute.role or $SAGEMAKER_ROLE), else the role of the current identity."""
    if planned:
        return planned
    # sagemaker.get_execution_role() would do the same but talks to the public STS endpoint directly,
    # ignoring AWS_ENDPOINT_URL / VPC endpoints; this asks through the configured client.
    arn = ctx.caller_arn
    role = role_from_identity(arn)
    if role is None:
        raise AwsError(
            f"compute.role: no IAM role for the training job: set compute.role in the spec or $SAGEMAKER_ROLE "
            f"(the current AWS identity {arn} is not a role)"
        )
    return role


def check_bucket(s3: Any, bucket: str, what: str) -> None:
    """AwsError unless `bucket` exists and is reachable."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = error_code(error)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise AwsError(f"{what}: bucket {bucket} does not exist") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(f"{what}: access to bucket {bucket} is denied") from None
        raise AwsError(f"{what}: bucket {bucket}: {describe_error(error)}") from None
    except Exception as error:
        raise AwsError(f"{what}: bucket {bucket}: {describe_error(error)}") from None


def check_s3_object(s3: Any, uri: str, what: str) -> None:
    """AwsError unless the S3 object exists (its bucket too)."""
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    check_bucket(s3, bucket, what)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in ("404", "NoSuchKey", "NotFound"):
            raise AwsError(f"{what}: {uri} does not exist") from None
        raise AwsError(f"{what}: {uri}: {describe_error(error)}") from None


def ensure_default_bucket(ctx: AwsContext) -> str:
    """The SDK config's DefaultS3Bucket, else `sagemaker-<region>-<account>`, created if missing."""
    from botocore.exceptions import ClientError

    configured = config_value(ctx.sdk_config, DEFAULT_BUCKET_CONFIG_PATH)
    bucket = str(configured) if configured else default_bucket_name(ctx.region, ctx.account_id)
    s3 = ctx.client("s3")
    owner = {} if configured else {"ExpectedBucketOwner": ctx.account_id}  # a same-named bucket of another account
    try:
        s3.head_bucket(Bucket=bucket, **owner)
        return bucket
    except ClientError as error:
        if error_code(error) in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(f"default bucket {bucket}: exists but is not yours or not accessible; set compute.output_path") from None
        if error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
            raise AwsError(f"default bucket {bucket}: {describe_error(error)}") from None
    with aws_errors(f"default bucket {bucket}: create"):
        location = {} if ctx.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": ctx.region}}
        s3.create_bucket(Bucket=bucket, **location)
    return bucket
