"""Data: image files in (``images``), class folders and splits (``folders``), preprocessing (``transforms``),
datasets and loaders (``loaders``), the decoded-image cache (``decoded``) and the data-set doctor (``check``)."""
