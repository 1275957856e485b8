"""The VISCA codec, its three transports and the head driver against the fake camera (real bytes on 127.0.0.1)."""
from __future__ import annotations

import dataclasses
import time

import pytest

from panoseeker_ros.core.config import ConfigError
from panoseeker_ros.drivers import visca as v
from panoseeker_ros.drivers.fakes import FakeViscaCamera
from panoseeker_ros.drivers.head import PtzError, PtzTimeout, wait_settled
from panoseeker_ros.drivers.profile import (PtzConnection, PtzProfile, connection_from_params, load_profile,
                                            shipped_profiles)

PROFILE = PtzProfile(name="fake", units_per_deg=(14.4, 14.4), pan_limits_deg=(-170.0, 170.0),
                     tilt_limits_deg=(-30.0, 90.0), settle_tolerance_deg=0.2, settle_timeout_s=5.0,
                     poll_period_s=0.02)


# ------------------------------------------------------------------ codec

def test_positions_are_signed_16_bit_nibbles():
    assert v.s16_nibbles(0x0990) == bytes((0, 9, 9, 0))
    assert v.s16_nibbles(-2448) == bytes((0xF, 6, 7, 0))  # 0xF670: -170° on a 14.4 counts/° head
    for value in (-0x8000, -1, 0, 1, 0x7FFF, -432, 1296):
        assert v.nibbles_s16(v.s16_nibbles(value)) == value
    with pytest.raises(ValueError, match="does not fit"):
        v.s16_nibbles(0x8000)


def test_command_bytes_follow_the_visca_tables():
    assert v.absolute_move(1, 0x0990, -432, 0x18, 0x14) == bytes.fromhex("81 01 06 02 18 14 00 09 09 00 0f 0e 05 00 ff")
    assert v.home(1) == bytes.fromhex("81 01 06 04 ff")
    assert v.position_inquiry(2) == bytes.fromhex("82 09 06 12 ff")
    assert v.if_clear(1) == bytes.fromhex("81 01 00 01 ff")
    assert v.cancel(1, 2) == bytes.fromhex("81 22 ff")
    stop = v.stop(1)
    assert stop == bytes.fromhex("81 01 06 01 01 01 03 03 ff")  # valid speed codes, not 00
    with pytest.raises(ValueError, match="pan speed 0"):
        v.absolute_move(1, 0, 0, 0, 1)


def test_replies_are_parsed_and_garbage_is_refused():
    assert v.parse_reply(bytes.fromhex("90 41 ff")) == v.Reply("ack", 1)
    assert v.parse_reply(bytes.fromhex("90 52 ff")) == v.Reply("completion", 2)
    err = v.parse_reply(bytes.fromhex("90 61 41 ff"))
    assert err.kind == "error" and "not executable" in err.describe()
    assert v.parse_reply(bytes.fromhex("90 60 03 ff")).describe() == "command buffer full"
    answer = v.parse_reply(bytes.fromhex("90 50 00 09 09 00 0f 0e 05 00 ff"))
    assert v.parse_position(answer) == (2448, -432)
    for junk in ("00 13 37 ff", "81 01 ff", "90 ff", "90 41 00"):
        with pytest.raises(v.ViscaFormatError):
            v.parse_reply(bytes.fromhex(junk))


def test_stream_framing_splits_on_the_terminator_and_drops_endless_garbage():
    buf = bytearray(bytes.fromhex("90 41 ff 90 51 ff 90 50"))
    assert v.split_messages(buf) == [bytes.fromhex("90 41 ff"), bytes.fromhex("90 51 ff")]
    assert buf == bytes.fromhex("90 50")
    junk = bytearray(b"\x00" * 100)
    assert v.split_messages(junk) == [b"\x00" * 100] and not junk


def test_visca_over_ip_header():
    datagram = v.ip_pack(v.IP_COMMAND, v.home(1), 7)
    assert datagram[:8] == bytes.fromhex("01 00 00 05 00 00 00 07")
    assert v.ip_unpack(datagram) == (v.IP_COMMAND, 7, v.home(1))
    with pytest.raises(v.ViscaFormatError, match="length"):
        v.ip_unpack(datagram[:-1])


# ------------------------------------------------------------------ driver against the fake

@pytest.fixture()
def fake():
    with FakeViscaCamera(full_speed_deg_s=(100.0, 80.0)) as cam:
        yield cam


class Strays:
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def __call__(self, key, text):
        self.seen.append((key, text))

    def keys(self):
        return {k for k, _ in self.seen}


def _connect(fake, transport: str, strays=None, timeout_s: float = 2.0) -> v.ViscaHead:
    if transport == "udp":
        conn = PtzConnection(host="127.0.0.1", port=fake.serve_udp(), transport="udp", timeout_s=timeout_s)
    elif transport == "udp_raw":
        conn = PtzConnection(host="127.0.0.1", port=fake.serve_udp_raw(), transport="udp_raw", timeout_s=timeout_s)
    elif transport == "tcp":
        conn = PtzConnection(host="127.0.0.1", port=fake.serve_tcp(), transport="tcp", timeout_s=timeout_s)
    else:  # pyserial's socket:// URL carries the serial code path to the fake's TCP port
        conn = PtzConnection(serial_device=f"socket://127.0.0.1:{fake.serve_tcp()}", transport="serial",
                             timeout_s=timeout_s)
    return v.ViscaHead.connect(conn, PROFILE, on_stray=strays)


@pytest.mark.parametrize("transport", ["udp", "udp_raw", "tcp", "serial"])
def test_an_absolute_move_takes_time_and_the_read_back_settles_at_the_target(fake, transport):
    head = _connect(fake, transport)
    try:
        t0 = time.monotonic()
        head.move_to(60.0, -20.0)
        s = wait_settled(head, (60.0, -20.0), PROFILE.settle_tolerance_deg, PROFILE.settle_timeout_s,
                         PROFILE.poll_period_s)
        assert s.settled and s.theta == pytest.approx(60.0, abs=0.1) and s.phi == pytest.approx(-20.0, abs=0.1)
        assert s.at - t0 >= 0.6 - 0.05  # 60° at 100°/s
        assert fake.pose_deg() == pytest.approx((60.0, -20.0), abs=0.05)
        head.home()  # the completion of the move above and home's ACK are told apart
        s = wait_settled(head, (0.0, 0.0), 0.2, 5.0, 0.02)
        assert s.settled
    finally:
        head.close()
    if transport == "udp":
        assert fake.sequence_resets == 1


def test_udp_error_replies_drops_garbage_and_wrong_sequence_numbers_are_survived(fake):
    strays = Strays()
    head = _connect(fake, "udp", strays, timeout_s=0.5)
    try:
        fake.faults.error = 0x41
        with pytest.raises(PtzError, match="absolute move .* refused: command not executable now"):
            head.move_to(10.0, 0.0)
        fake.faults.garbage, fake.faults.wrong_sequence = 2, 2
        assert head.position() == pytest.approx((0.0, 0.0))
        head.move_to(10.0, 0.0)
        assert {"garbage", "sequence"} <= strays.keys()
        fake.faults.drop = 1
        with pytest.raises(PtzTimeout, match=r"no answer to 'pan-tilt position inquiry' within 0.5 s"):
            head.position()
        head.reset()  # sequence reset and buffer clear: back in step
        s = wait_settled(head, (10.0, 0.0), 0.2, 5.0, 0.02)
        assert s.settled and s.theta == pytest.approx(10.0, abs=0.1)
    finally:
        head.close()
    assert fake.sequence_resets == 2


@pytest.mark.parametrize("transport", ["udp", "udp_raw"])
def test_lost_datagrams_are_sent_again_and_answered_once(fake, transport):
    head = _connect(fake, transport, timeout_s=1.0)
    try:
        assert head.attempts == v.DATAGRAM_ATTEMPTS
        fake.faults.loss = 0.3
        for theta in (20.0, -20.0, 40.0, 0.0):
            head.move_to(theta, 5.0)
            assert wait_settled(head, (theta, 5.0), 0.2, 5.0, 0.02).settled
        assert fake.lost > 0 and head.resends > 0
        if transport == "udp":  # a request re-sent after its reply was lost runs once (sequence numbers)
            assert len([m for m in fake.commands if m[1:4] == bytes((0x01, 0x06, 0x02))]) == 4
    finally:
        head.close()


def test_the_cameras_sequence_errors_reset_the_sequence_and_send_again(fake):
    strays = Strays()
    head = _connect(fake, "udp", strays, timeout_s=0.5)
    try:
        fake.faults.sequence_error = 1  # control reply 0F 01: the camera lost track of our sequence numbers
        head.move_to(15.0, 0.0)
        assert fake.sequence_resets == 2 and head.resyncs == 1
        assert any(k == "sequence error" and "abnormal sequence number (control reply 0F 01)" in t
                   for k, t in strays.seen)
        assert wait_settled(head, (15.0, 0.0), 0.2, 5.0, 0.02).settled
        fake.faults.sequence_error = 2  # again after the reset: one line naming it, not a timeout
        with pytest.raises(PtzError, match="abnormal sequence number .* again after a sequence reset") as exc:
            head.position()
        assert not isinstance(exc.value, PtzTimeout)
    finally:
        head.close()


def test_replies_from_another_address_are_never_read(fake):
    import socket

    head = _connect(fake, "udp")
    try:
        intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        intruder.bind(("127.0.0.2", head.transport.peer[1]))  # the camera's port, another address
        answer = bytes.fromhex("90 50 00 01 00 00 00 01 00 00 ff")  # "at (256, 256) counts"
        for seq in range(1, 20):  # replies to any sequence number the head may use next
            intruder.sendto(v.ip_pack(v.IP_REPLY, answer, head.transport.sequence + seq),
                            head.transport.sock.getsockname())
        intruder.close()
        assert head.position_units() == (0, 0)
    finally:
        head.close()


def test_a_silent_camera_times_out_with_one_line_and_a_slow_one_is_waited_for(fake):
    fake.faults.silent = True
    with pytest.raises(PtzTimeout) as exc:
        _connect(fake, "udp", timeout_s=0.3)
    assert "\n" not in str(exc.value) and "VISCA over IP is enabled" in str(exc.value)
    fake.faults.silent = False
    fake.faults.reply_delay_s = 0.1
    head = _connect(fake, "tcp")
    try:
        assert head.position() == (0.0, 0.0)
    finally:
        head.close()


def test_tcp_garbage_between_replies_is_skipped(fake):
    strays = Strays()
    head = _connect(fake, "tcp", strays)
    try:
        fake.faults.garbage = 1
        head.move_to(-30.0, 10.0)
        assert "garbage" in strays.keys()
        assert wait_settled(head, (-30.0, 10.0), 0.2, 5.0, 0.02).settled
    finally:
        head.close()


def test_the_fake_refuses_positions_beyond_its_limits(fake):
    head = _connect(fake, "udp")
    try:
        far = dataclasses.replace(PROFILE, units_per_deg=(20.0, 20.0))  # 170° -> 3400 counts, beyond 2448
        head.profile = far
        with pytest.raises(PtzError, match="syntax error"):
            head.move_to(170.0, 0.0)
        assert fake.refused == [(3400, 0)]
    finally:
        head.close()


# ------------------------------------------------------------------ profiles and connection settings

def test_shipped_profiles_load_and_say_where_their_numbers_come_from():
    profiles = shipped_profiles()
    assert {"ptzoptics_20x", "sony_srg300h"} <= set(profiles)
    assert load_profile("ptzoptics_20x").units_per_deg == (14.4, 14.4)
    sony = load_profile("sony_srg300h")
    assert sony.units_per_deg == (51.2, 51.2) and sony.to_units(170.0, -20.0) == (8704, -1024)
    for name in profiles:
        assert load_profile(name).source


def test_bad_profiles_and_connections_fail_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("units_per_deg: [14.4]\n")
    with pytest.raises(ConfigError, match=r"'units_per_deg' must be a list of 2 numbers"):
        load_profile(str(bad))
    bad.write_text("pan_limits_deg: [10, -10]\n")
    with pytest.raises(ConfigError, match=r"'pan_limits_deg' must be \[min, max\]"):
        load_profile(str(bad))
    bad.write_text("zoom: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'zoom'"):
        load_profile(str(bad))
    with pytest.raises(ConfigError, match="neither a shipped profile"):
        load_profile("no_such_head")
    bad.write_text("speed: [30, 20]\n")  # beyond VISCA's pan speed codes: refused at load, not on the wire
    with pytest.raises(ConfigError, match=r"'speed' must be VISCA speed codes \[pan 1..24, tilt 1..23\], got \[30, 20\]"):
        load_profile(str(bad))
    bad.write_text("onvif_tilt_deg: [0, 0]\n")
    with pytest.raises(ConfigError, match="'onvif_tilt_deg' must be .* two different angles"):
        load_profile(str(bad))
    with pytest.raises(ConfigError, match="'transport' = 'usb'; choose one of udp, udp_raw, tcp, serial"):
        connection_from_params({"transport": "usb"})
    with pytest.raises(ConfigError, match="'visca_address' = 9 must be 1..7"):
        connection_from_params({"visca_address": 9, "dataset": "ignored"})
