"""Analyses of trained models: explanations (filters, Grad-CAM, LRP) and the robustness sweep."""
