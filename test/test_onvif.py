"""The ONVIF PTZ driver (onvif-zeep-async) against the fake ONVIF SOAP service on 127.0.0.1."""
from __future__ import annotations

import pytest

pytest.importorskip("onvif")

from panoseeker_ros.core.config import CameraConfig  # noqa: E402
from panoseeker_ros.drivers.fakes import FakeOnvifPtz, FakePtzRig  # noqa: E402
from panoseeker_ros.drivers.head import PtzError, PtzTimeout, wait_settled  # noqa: E402
from panoseeker_ros.drivers.onvif_ptz import OnvifHead  # noqa: E402
from panoseeker_ros.drivers.profile import PtzConnection, PtzProfile  # noqa: E402
from panoseeker_ros.drivers.ptz_camera import open_ptz_camera  # noqa: E402

PROFILE = PtzProfile(name="fake_onvif", onvif_pan_deg=(-170.0, 170.0), onvif_tilt_deg=(-30.0, 90.0),
                     pan_limits_deg=(-170.0, 170.0), tilt_limits_deg=(-30.0, 90.0), fov_deg=(60.0, 45.0),
                     image_size=(640, 480), settle_tolerance_deg=0.2, settle_timeout_s=5.0, poll_period_s=0.02,
                     frame_delay_s=0.15)


@pytest.fixture()
def fake():
    with FakeOnvifPtz(speed_deg_s=(40.0, 30.0)) as f:
        yield f


def _connect(fake, timeout_s=3.0) -> OnvifHead:
    return OnvifHead.connect(PtzConnection(host="127.0.0.1", port=fake.port, timeout_s=timeout_s), PROFILE)


def test_profiles_space_absolute_move_and_status(fake):
    head = _connect(fake)
    try:
        assert head.token == "profile_1" and head.x_range == (-1.0, 1.0)
        assert fake.requests[:3] == ["GetServices", "GetProfiles", "GetConfigurationOptions"]
        head.move_to(85.0, 30.0)
        assert fake.moves[-1] == pytest.approx((0.5, 0.0))  # the generic space, mapped from degrees
        assert head.position()[0] < 80.0 and head.moving is True  # 85° at 40°/s: still on its way
        s = wait_settled(head, (85.0, 30.0), 0.2, 10.0, 0.02)
        assert s.settled and (s.theta, s.phi) == pytest.approx((85.0, 30.0), abs=0.05) and head.moving is False
        head.home()
        assert wait_settled(head, (0.0, 0.0), 0.2, 10.0, 0.02).settled
        head.stop()
    finally:
        head.close()


def test_faults_are_one_line_errors(fake):
    head = _connect(fake, timeout_s=0.5)
    try:
        fake.error_text = "the head is locked"
        with pytest.raises(PtzError, match="AbsoluteMove to .* refused: the head is locked"):
            head.move_to(10.0, 0.0)
        fake.faults.silent = True
        with pytest.raises(PtzTimeout, match="no answer to GetStatus within 0.5 s") as exc:
            head.position()
        assert "\n" not in str(exc.value)
        fake.faults.silent = False
        head.timeout_s = 3.0
        assert head.position() == pytest.approx((0.0, 0.0), abs=1e-3)
    finally:
        head.close()
    with pytest.raises(PtzTimeout, match="check the address and port"):
        OnvifHead.connect(PtzConnection(host="127.0.0.1", port=1, timeout_s=0.5), PROFILE)


def test_ptz_camera_over_onvif_clamps_and_reads_back(bedroom_erp):
    rig = FakePtzRig.start(bedroom_erp, (60.0, 45.0), (640, 480), fps=20.0, driver="onvif")
    try:
        conn = PtzConnection(**{k: v for k, v in rig.params().items() if k != "driver"}, timeout_s=1.0)
        cam = open_ptz_camera("onvif", conn, PROFILE, CameraConfig((60.0, 45.0), 320, 240, -60.0, 60.0))
        try:
            view = cam.look(175.0, -50.0)
            assert view.shape == (240, 320, 3)
            assert (cam.pose().theta, cam.pose().phi) == pytest.approx((170.0, -30.0), abs=0.1)
            assert all(-1 <= x <= 1 and -1 <= y <= 1 for x, y in rig.camera.moves)
        finally:
            cam.close()
    finally:
        rig.close()


def test_ptz_status_and_look_over_onvif(bedroom_erp, tmp_path, capsys):
    import yaml

    from panoseeker_ros.cli import main

    rig = FakePtzRig.start(bedroom_erp, (60.0, 45.0), (640, 480), fps=20.0, driver="onvif")
    try:
        profile = tmp_path / "onvif_head.yaml"
        profile.write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v
                                           for k, v in PROFILE.__dict__.items()}))
        params = tmp_path / "seek.yaml"
        params.write_text(yaml.safe_dump({"/**/camera_node": {"ros__parameters": {
            **rig.params(), "profile": str(profile), "timeout_s": 3.0}}}))
        assert main(["ptz", "--params", str(params), "status"]) == 0
        out = capsys.readouterr().out
        assert "ONVIF http://127.0.0.1" in out and "profile token profile_1" in out and "640x480" in out
        assert main(["ptz", "--params", str(params), "look", "-45", "15"]) == 0
        assert "reached pan -45.00° tilt +15.00°" in capsys.readouterr().out
        assert rig.camera.pose_deg() == pytest.approx((-45.0, 15.0), abs=0.05)
    finally:
        rig.close()


def test_garbage_positions_and_zero_width_ranges_are_camera_faults(fake, bedroom_erp):
    head = _connect(fake)
    try:
        fake.position_text = ("nan", "0.1")
        with pytest.raises(PtzError, match=r"GetStatus position x=nan y=0.1 is not a pair of numbers"):
            head.position()
    finally:
        head.close()
    fake.position_text = None
    fake.ranges["x"] = (0.5, 0.5)
    with pytest.raises(PtzError, match=r"XRange is \[0.5, 0.5\], not a range"):
        _connect(fake)
    # through the camera the node drives: a garbage read-back mid-look is a PtzError, never a ValueError
    rig = FakePtzRig.start(bedroom_erp, (60.0, 45.0), (640, 480), fps=20.0, driver="onvif")
    try:
        conn = PtzConnection(**{k: v for k, v in rig.params().items() if k != "driver"}, timeout_s=1.0)
        cam = open_ptz_camera("onvif", conn, PROFILE, CameraConfig((60.0, 45.0), 320, 240, -60.0, 60.0))
        try:
            rig.camera.position_text = ("1e400", "abc")
            with pytest.raises(PtzError, match="not a pair of numbers"):
                cam.look(10.0, 0.0)
            assert cam.faults == 1
        finally:
            cam.close()
    finally:
        rig.close()


def test_the_password_comes_from_the_environment_or_a_private_file_and_never_shows(fake, tmp_path, monkeypatch):
    from panoseeker_ros.core.config import ConfigError
    from panoseeker_ros.drivers.profile import ONVIF_PASSWORD_ENV, onvif_password

    secret = tmp_path / "onvif.secret"
    secret.write_text("12345\n")
    secret.chmod(0o644)
    conn = PtzConnection(host="127.0.0.1", port=fake.port, timeout_s=3.0, onvif_password_file=str(secret))
    with pytest.raises(ConfigError, match=r"readable by others \(mode 0644\); run: chmod 600") as exc:
        onvif_password(conn, environ={})
    assert "12345" not in str(exc.value)
    secret.chmod(0o600)
    assert onvif_password(conn, environ={}) == "12345"
    assert onvif_password(conn, environ={ONVIF_PASSWORD_ENV: "from-env"}) == "from-env"
    assert not hasattr(conn, "onvif_password")  # not a connection setting, so never a ROS parameter
    monkeypatch.delenv(ONVIF_PASSWORD_ENV, raising=False)
    head = OnvifHead.connect(conn, PROFILE)
    try:
        fake.error_text = "user admin with password 12345 may not move"  # a camera that echoes the secret
        with pytest.raises(PtzError) as exc:
            head.move_to(10.0, 0.0)
        assert "12345" not in str(exc.value) and "password *** may not move" in str(exc.value)
    finally:
        head.close()


def _certificates(tmp_path):
    """A CA and a certificate it signs for 127.0.0.1 (PEM files); the camera's server-side TLS context."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, key, issuer, issuer_key, ca, san=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, cam_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test camera CA", ca_key, "test camera CA", ca_key, True)
    cam = cert("camera", cam_key, "test camera CA", ca_key, False, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "camera.pem").write_bytes(cam.public_bytes(pem))
    (tmp_path / "camera.key").write_bytes(cam_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "camera.pem", tmp_path / "camera.key")
    return tmp_path / "ca.pem", server


def _https(fake, ca_file="", timeout_s=3.0) -> PtzConnection:
    return PtzConnection(host="127.0.0.1", port=fake.port, timeout_s=timeout_s, onvif_https=True,
                         onvif_ca_file=str(ca_file))


def test_https_checks_the_cameras_certificate(tmp_path):
    ca, server = _certificates(tmp_path)
    with FakeOnvifPtz(speed_deg_s=(400.0, 400.0), tls=server) as fake:
        head = OnvifHead.connect(_https(fake, ca), PROFILE)  # the camera's CA trusted: every call over https
        try:
            assert head.name == f"ONVIF https://127.0.0.1:{fake.port}"
            head.move_to(40.0, 10.0)
            assert wait_settled(head, (40.0, 10.0), 0.2, 10.0, 0.02).settled
            assert fake.requests[:3] == ["GetServices", "GetProfiles", "GetConfigurationOptions"]
        finally:
            head.close()
        before = len(fake.requests)
        # the system's CAs do not vouch for it: refused before any SOAP request, in one line naming the fix
        with pytest.raises(PtzError, match="TLS failed .*certificate verify failed.*onvif_ca_file") as exc:
            OnvifHead.connect(_https(fake), PROFILE)
        assert "\n" not in str(exc.value) and len(fake.requests) == before
        # a certificate for another name: refused too (host-name check)
        with pytest.raises(PtzError, match="TLS failed"):
            OnvifHead.connect(PtzConnection(host="localhost", port=fake.port, timeout_s=3.0, onvif_https=True,
                                            onvif_ca_file=str(ca)), PROFILE)
        assert len(fake.requests) == before
    with pytest.raises(PtzError, match="onvif_ca_file .*missing.pem.*readable PEM"):
        OnvifHead.connect(_https(fake, tmp_path / "missing.pem"), PROFILE)


def test_https_refuses_services_advertised_over_plain_http(tmp_path):
    ca, server = _certificates(tmp_path)
    with FakeOnvifPtz(tls=server, advertise="http") as fake:
        with pytest.raises(PtzError, match="advertises its media service at http://.*not over https"):
            OnvifHead.connect(_https(fake, ca), PROFILE)
        assert fake.requests == ["GetServices"]  # asked over https; nothing sent to the plain address


def test_onvif_https_is_a_boolean_parameter():
    from panoseeker_ros.core.config import ConfigError
    from panoseeker_ros.drivers.profile import connection_from_params

    assert connection_from_params({"onvif_https": True, "onvif_ca_file": "/etc/cam.pem"}).onvif_https is True
    with pytest.raises(ConfigError, match="'onvif_https' must be bool, got 'yes'"):
        connection_from_params({"onvif_https": "yes"})
