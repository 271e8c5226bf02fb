"""The API's login endpoints: a token for a username and password, and token rotation."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .auth import issue_token, rotate_token, token_ttl


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class Throttled(exceptions.Throttled):
    default_detail = "Too many failed logins: try again later."


TOKEN_REPLY = inline_serializer(
    "TokenReply", {"token": serializers.CharField(), "expires_at": serializers.DateTimeField()}
)


def _token_reply(token: Token) -> Response:
    return Response({"token": token.key, "expires_at": token.created + token_ttl()})


class ObtainToken(APIView):
    """POST username and password: the user's API token and when it expires. Goes through
    django.contrib.auth.authenticate with the request, so failed tries count towards
    the login lockout exactly like the admin's login form."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=LoginSerializer, responses={200: TOKEN_REPLY})
    def post(self, request: Request) -> Response:
        login = LoginSerializer(data=request.data)
        login.is_valid(raise_exception=True)
        # The Django request, not DRF's wrapper: axes marks it, and its middleware turns
        # a locked-out attempt into a 429.
        user = authenticate(
            request=request._request,
            username=login.validated_data["username"],
            password=login.validated_data["password"],
        )
        if getattr(request._request, "axes_locked_out", False):
            raise Throttled()
        if user is None or not user.is_active:
            raise exceptions.ValidationError(
                {"non_field_errors": ["Unable to log in with provided credentials."]}
            )
        return _token_reply(issue_token(user))


class RotateToken(APIView):
    """POST (authenticated): drop your API token and get a new one."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: TOKEN_REPLY})
    def post(self, request: Request) -> Response:
        return _token_reply(rotate_token(request.user))
