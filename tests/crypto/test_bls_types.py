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
