"""Decoders check the Python type before anything else: ``bytes(128)`` is 128 zero bytes, the EIP-2537 encoding
of the G1 identity, so an int passed by mistake must be refused, never decoded."""

import pytest

from derot.constants import DST_CERT
from derot.crypto.bls import G1, G2, PointDecodeError, scalar_from_bytes, scalar_from_wide_bytes


@pytest.mark.parametrize("cls", [G1, G2])
@pytest.mark.parametrize("allow_identity", [False, True])
def test_an_int_of_the_encoding_size_is_not_the_identity(cls, allow_identity):
    with pytest.raises(PointDecodeError, match="expected bytes, got int"):
        cls.from_eip2537(cls.EIP2537_SIZE, allow_identity=allow_identity)
    with pytest.raises(PointDecodeError, match="expected bytes, got int"):
        cls.from_bytes(cls.SIZE, allow_identity=allow_identity)
    # control: the zero bytes themselves are the identity, accepted only when allowed
    if allow_identity:
        assert cls.from_eip2537(bytes(cls.EIP2537_SIZE), allow_identity=True).is_identity()
    else:
        with pytest.raises(PointDecodeError, match="identity"):
            cls.from_eip2537(bytes(cls.EIP2537_SIZE))


@pytest.mark.parametrize("value", [32, 48, "00" * 32, None, [0] * 32])
def test_scalar_and_message_decoders_refuse_non_bytes(value):
    with pytest.raises(TypeError, match="expected bytes"):
        scalar_from_bytes(value)
    with pytest.raises(TypeError, match="expected bytes"):
        scalar_from_wide_bytes(value)
    with pytest.raises(TypeError, match="expected bytes"):
        G1.hash_to_curve(value, DST_CERT)


def test_byte_like_inputs_still_decode():
    point = G1.generator() * 7
    assert G1.from_eip2537(memoryview(point.to_eip2537())) == point
    assert G1.from_bytes(bytearray(point.to_bytes())) == point
    assert scalar_from_bytes(bytearray((5).to_bytes(32, "big"))) == 5


def _other_decoders():
    """Every decoder of untrusted bytes outside derot.crypto.bls, with the error it must raise."""
    from derot.certs import certificate, notices, verify
    from derot.crypto import kd
    from derot.crypto.dkg import messages, proofs
    from derot.crypto.dkg.errors import DkgMessageRejected
    from derot.crypto.hazmat import batch

    return [
        ("EncryptedKey.decode", kd.EncryptedKey.decode, PointDecodeError),
        ("proofs.decode_point", proofs.decode_point, PointDecodeError),
        ("hazmat.batch.decode_point", batch.decode_point, batch.CommitmentDecodeError),
        ("dkg Message.decode", messages.Message.decode, DkgMessageRejected),
        ("dkg AnnounceBody.decode", messages.AnnounceBody.decode, DkgMessageRejected),
        ("dkg DealBody.decode", lambda v: messages.DealBody.decode(v, threshold=2, recipients=3), DkgMessageRejected),
        ("dkg ResponseBody.decode", lambda v: messages.ResponseBody.decode(v, dealers=frozenset({1})),
         DkgMessageRejected),
        ("certs decode_signature", verify.decode_signature, PointDecodeError),
        ("Certificate.decode", certificate.Certificate.decode, certificate.CertificateDecodeError),
        ("Notice.decode", notices.Notice.decode, notices.NoticeDecodeError),
        ("SignedNotice.decode", notices.SignedNotice.decode, notices.NoticeDecodeError),
    ]


@pytest.mark.parametrize("size", [48, 96, 128, 192])
def test_every_other_decoder_refuses_an_int_before_converting_it(size):
    """An int of an encoding's size is refused by its type, never turned into zero bytes and parsed."""
    for name, decode, error in _other_decoders():
        with pytest.raises(error, match="expected bytes, got int"):
            decode(size)
        print(name, "refuses", size)
