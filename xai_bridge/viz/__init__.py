"""What a person looks at: plots, agreement between methods, the HTML report, LIME's mask view.

Each module imports matplotlib / pandas only when it draws or tabulates.
"""
