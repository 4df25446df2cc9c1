"""Models: the factory (``factory``: any timm model or ``simple_cnn``, offline-first weights), the parts
training needs (``parts``) and knowledge distillation (``distill``)."""
