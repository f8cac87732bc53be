"""ROS 2 adapter over the core pipeline (imports rclpy; the core never imports this)."""
