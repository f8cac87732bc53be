"""3D geometry of the masked objects (ROS-free).

* :mod:`.depth` -- sensor depth as REP 118 publishes it, scaled to the colour image, and
  the pinhole intrinsics of a camera (``camera_info`` or ``(fx, fy, cx, cy)``).
* :mod:`.boxes` -- oriented boxes: fitting one to points, quaternions, comparing two.
* :mod:`.objects3d` -- per object and camera the 3D points behind its mask, their
  centroid and box; fusion of several cameras into one frame.
* :mod:`.scale` -- the metric scale of VGGT's relative geometry (from a depth camera or a
  known baseline).
"""
