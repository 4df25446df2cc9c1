"""Reports: plots, report.html, compare, Grad-CAM and the error gallery, val's figures, check.html and its label
review, tune's summary: every chart and page, drawn from what imgcls recorded."""
