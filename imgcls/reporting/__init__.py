"""Reports: plots, report.html, compare, Grad-CAM and the error gallery, all drawn from run folders."""
