"""The `aws-kms` KEK provider: AWS KMS wraps each data key (GenerateDataKey on wrap,
Decrypt on unwrap) under a KMS key that never leaves KMS.

The EncryptionContext of every call is the blob's associated data (tenant id, key id,
purpose, format version), so KMS refuses to decrypt a data key for any other context, and
CloudTrail records which tenant's key each Decrypt was for. An IAM policy can pin the
proxy's kms:Decrypt to that context (deploy/README.md). Credentials and region come from
the standard AWS chain (environment, instance or pod role); METRUX_KMS_ENDPOINT_URL points
at a KMS-compatible endpoint (tests use moto's server).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.crypto.provider import DataKey, KekError

PREFIX = "aws-kms:"


class AwsKmsKek:
    def __init__(
        self, key_id: str, *, region: str | None = None, endpoint_url: str | None = None
    ) -> None:
        import aioboto3  # only deployments on KMS pay for the AWS SDK

        self._key_id = key_id
        self._session = aioboto3.Session(region_name=region)
        self._endpoint_url = endpoint_url
        self._arn: str | None = None

    def __repr__(self) -> str:
        return f"<AwsKmsKek {self._key_id}>"

    @property
    def kek_id(self) -> str:
        return PREFIX + (self._arn or self._key_id)

    def owns(self, kek_id: str) -> bool:
        return kek_id.startswith(PREFIX)

    async def is_current(self, kek_id: str) -> bool:
        """Whether a blob is wrapped under this provider's KMS key (not just any KMS key)."""
        return kek_id == PREFIX + await self._resolve()

    def _client(self) -> Any:
        from botocore.config import Config

        # Bounded: a KMS outage must fail an attach or an upload in seconds, not minutes.
        config = Config(
            connect_timeout=5,
            read_timeout=10,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        return self._session.client("kms", endpoint_url=self._endpoint_url, config=config)

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            async with self._client() as kms:
                return await getattr(kms, operation)(**kwargs)  # type: ignore[no-any-return]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            raise KekError(f"KMS refused {operation}: {code}") from None
        except (BotoCoreError, OSError) as exc:
            raise KekError(f"KMS unavailable: {type(exc).__name__}") from None

    async def _resolve(self) -> str:
        if self._arn is None:
            described = await self._call("describe_key", KeyId=self._key_id)
            self._arn = str(described["KeyMetadata"]["Arn"])
        return self._arn

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        response = await self._call(
            "generate_data_key",
            KeyId=self._key_id,
            KeySpec="AES_256",
            EncryptionContext=dict(context),
        )
        self._arn = str(response["KeyId"])
        return DataKey(
            plaintext=bytearray(response["Plaintext"]),
            encrypted=bytes(response["CiphertextBlob"]),
            kek_id=PREFIX + self._arn,
        )

    async def encrypt_data_key(self, plaintext: bytearray, context: Mapping[str, str]) -> bytes:
        response = await self._call(
            "encrypt",
            KeyId=self._key_id,
            Plaintext=bytes(plaintext),
            EncryptionContext=dict(context),
        )
        self._arn = str(response["KeyId"])
        return bytes(response["CiphertextBlob"])

    async def decrypt_data_key(
        self, encrypted: bytes, context: Mapping[str, str], kek_id: str
    ) -> bytearray:
        if not self.owns(kek_id):
            raise KekError(f"blob was wrapped under {kek_id}, not under a KMS key")
        response = await self._call(
            "decrypt",
            CiphertextBlob=encrypted,
            EncryptionContext=dict(context),
            KeyId=kek_id[len(PREFIX) :],
        )
        return bytearray(response["Plaintext"])
