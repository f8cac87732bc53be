"""Neural networks of VGGT-S: the VGGT backbone and the Union Segmentation Head."""
