"""The web console: a hand-written page (HTML, CSS, ES modules in ``static/``) served by the control
plane at ``/console``; it drives the admin API with the token the user types in."""
