"""DDS transport defaults for image-carrying processes (vggts_ros.ros.transport): set
only where the user has not configured Fast DDS themselves."""

from vggts_ros.ros import transport


def test_fast_dds_gets_large_buffers_by_default():
    env = {}
    assert transport.configure(env) == f"DEFAULT?sockets_size={transport.SEGMENT_SIZE}"
    assert env["FASTDDS_BUILTIN_TRANSPORTS"] == f"DEFAULT?sockets_size={transport.SEGMENT_SIZE}"
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}
    assert transport.configure(env) and "FASTDDS_BUILTIN_TRANSPORTS" in env


def test_user_settings_and_other_rmws_are_left_alone():
    for name in transport.USER_SETTINGS:
        env = {name: "mine"}
        assert transport.configure(env) == ""
        assert env == {name: "mine"}
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert transport.configure(env) == "" and "FASTDDS_BUILTIN_TRANSPORTS" not in env


def test_humble_fast_dds_is_left_alone(monkeypatch):
    """Humble's Fast DDS 2.6 reads only a bare transport name from FASTDDS_BUILTIN_TRANSPORTS
    and logs "Wrong value" for the options form: nothing is set there (compat)."""
    from vggts_ros.ros import compat

    monkeypatch.setattr(compat, "rclpy_version", lambda: (3, 3, 15))
    env = {}
    assert transport.configure(env) == "" and env == {}
    monkeypatch.setattr(compat, "rclpy_version", lambda: (7, 1, 5))
    assert transport.configure(env) == f"DEFAULT?sockets_size={transport.SEGMENT_SIZE}"
