"""Everything that needs IPython or ipywidgets: %%flux, cards, the panel, and how a
saved notebook keeps them.

The only room that imports IPython or ipywidgets, and only when a kernel asks for it.
"""
